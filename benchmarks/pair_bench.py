"""Two saved pruned models of one dense model, paired on the test split no stage of a run saw.

Each model's held-out metric with its 95% interval, and the paired difference A - B (bootstrap over
the test examples, ``planner.tasks.compare``): is one plan better than the other, or is it noise? Used
for plans made from different latency tables (torch vs llama.cpp) at the same shape.

Run: ``.venv/bin/python benchmarks/pair_bench.py --model smollm2 --batch-size 1 --seq-len 256 A/pruned
B/pruned`` with the shape and data of the runs that wrote them; the last line holds the figures.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from planner.config import RunConfig
    from planner.stages.apply.pruned_io import load_pruned, read_pruned_config
    from planner.stages.load import configured_task, load_configured
    from planner.tasks.compare import metric_interval, paired_metric_difference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="pruned/ folder of plan A")
    parser.add_argument("b", help="pruned/ folder of plan B")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="bbc")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    start = time.perf_counter()
    config = RunConfig(model=args.model, data=args.data, batch_size=args.batch_size, seq_len=args.seq_len)
    loaded = load_configured(config)
    for folder in (args.a, args.b):
        cut_from = read_pruned_config(folder)["plan"]["model_fingerprint"]
        if cut_from != loaded.fingerprint:
            raise SystemExit(f"{folder} was cut from another model (fingerprint {cut_from}); use its --model.")
    task = configured_task(config, loaded)
    dense = task.evaluate(loaded.model)
    a, b = (task.evaluate(load_pruned(folder)) for folder in (args.a, args.b))
    shown = {}
    for name, result in (("dense", dense), ("A", a), ("B", b)):
        low, high = metric_interval(result)
        shown[name] = f"{result.value:.2f} [{low:.2f}, {high:.2f}]"
        print(f"{name}: {result.name} {shown[name]} on {result.examples} test examples")
    diff = paired_metric_difference(a, b)
    print(
        f"pair: {dense.name} dense {dense.value:.2f} | A {shown['A']} | B {shown['B']} | A - B {diff.difference:+.2f} "
        f"[{diff.low:+.2f}, {diff.high:+.2f}] {diff.verdict} for A | {a.examples} test examples, "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
