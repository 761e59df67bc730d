"""Two saved pruned models of one dense model, paired on the test split no stage of a run saw.

Each model's held-out metric with its 95% interval, and the paired difference A - B (bootstrap over
the test examples, ``planner.tasks.compare``): is one plan better than the other, or is it noise? Used
for plans made from different latency tables (torch vs llama.cpp) at the same shape.

A model may also be ``SWEEP/pareto.csv#ROW``: that row's heads / neurons per layer (a ``planner sweep``
writes no models), selected by Fisher and applied with its mask tuning, as the sweep's planner rows
are (the same calibration data gives the same model). Used for plans searched with different
objectives (``--search-objective kl`` vs ``ce``).

Run: ``.venv/bin/python benchmarks/pair_bench.py --model smollm2 --batch-size 1 --seq-len 256 A/pruned
B/pruned`` with the shape and data of the runs that wrote them; the last line holds the figures.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def model_of(spec: str, loaded: Any, task: Any, fisher: dict[str, Any]) -> Any:
    """The pruned model ``spec`` names: a pruned/ folder, or ``pareto.csv#ROW`` applied by Fisher."""
    from planner.stages.apply.pruned_io import load_pruned

    if "#" in spec:
        import pandas as pd
        from compensation_bench import plan_for, row_keep

        from planner.backends import FisherBackend

        csv, row = spec.rsplit("#", 1)
        frame = pd.read_csv(csv)
        if not row.isdigit() or int(row) >= len(frame):
            raise SystemExit(f"{spec}: {csv} has rows 0..{len(frame) - 1}; name one after '#'.")
        backend = FisherBackend()
        if "scores" not in fisher:
            fisher["scores"] = backend.score(loaded.adapter, task)
        units = [u for u in loaded.adapter.units() if u.kind in ("attention", "ffn")]
        keep = row_keep(backend, fisher["scores"], units, frame.iloc[int(row)], spec)
        return backend.apply(loaded.adapter, plan_for(keep, units, "fisher"), task)
    return load_pruned(spec)  # its model was checked before any work (``check_folder``)


def check_folder(spec: str, loaded: Any) -> None:
    """Refuse a pruned/ folder cut from another model than ``loaded`` (a ``#ROW`` spec passes)."""
    from planner.stages.apply.pruned_io import read_pruned_config

    if "#" in spec:
        return
    cut_from = read_pruned_config(spec)["plan"]["model_fingerprint"]
    if cut_from != loaded.fingerprint:
        raise SystemExit(f"{spec} was cut from another model (fingerprint {cut_from}); use its --model.")


def main() -> None:
    from planner.config import RunConfig
    from planner.stages.load import configured_task, load_configured
    from planner.tasks.compare import metric_interval, paired_metric_difference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="pruned/ folder of plan A, or a sweep's pareto.csv#ROW")
    parser.add_argument("b", help="pruned/ folder of plan B, or a sweep's pareto.csv#ROW")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="bbc")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    start = time.perf_counter()
    config = RunConfig(model=args.model, data=args.data, batch_size=args.batch_size, seq_len=args.seq_len)
    loaded = load_configured(config)
    for spec in (args.a, args.b):  # before any work
        check_folder(spec, loaded)
    task = configured_task(config, loaded)
    dense = task.evaluate(loaded.model)
    fisher: dict[str, Any] = {}
    a, b = (task.evaluate(model_of(spec, loaded, task, fisher)) for spec in (args.a, args.b))
    scale = 100.0 if dense.name == "accuracy" else 1.0  # accuracy in points, as the sweep prints it
    shown = {}
    for name, result in (("dense", dense), ("A", a), ("B", b)):
        low, high = metric_interval(result)
        shown[name] = f"{scale * result.value:.2f} [{scale * low:.2f}, {scale * high:.2f}]"
        print(f"{name}: {result.name} {shown[name]} on {result.examples} test examples")
    diff = paired_metric_difference(a, b)
    print(
        f"pair: {dense.name} dense {scale * dense.value:.2f} | A {shown['A']} | B {shown['B']} | A - B "
        f"{scale * diff.difference:+.2f} [{scale * diff.low:+.2f}, {scale * diff.high:+.2f}] {diff.verdict} for A | "
        f"{a.examples} test examples, {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
