"""Does FLAP's bias compensation help the planner's own backends? Quality side only: compensation
changes no shape, so a plan's speed is the same with and without it.

For each real model and data set, every unit is cut to the level nearest a kept share (0.5 and 0.25
of its heads / neurons, what uniform width pruning does at about 2x and 3x), with the heads / neurons
each backend selects, then applied four ways: Fisher (mask tuning) with and without compensation,
magnitude with and without. Test-set metric of each, and the paired difference "with - without" with
its 95% bootstrap interval (test examples never seen by scoring, tuning or the channel means).

Cases: MiniLM (fitted head, s128) on ``../shared/data/reviews-medicine-4class.jsonl`` and on BBC News;
SmolLM2-135M (causal LM, s128, 32 calibration windows) on BBC News.

``--sweep CASE PARETO_CSV`` applies instead the planner's own plans from a ``planner sweep`` on that case
(each distinct row of heads / neurons kept per layer whose method is the planner's): searched plans empty
whole attention blocks, which uniform cuts never do, and a removed block's mean output is what
compensation restores.

Run: ``.venv/bin/python benchmarks/compensation_bench.py [case ...]`` or ``... --sweep minilm-medicine
runs/sweep/pareto.csv``; the last line holds the figures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

MEDICINE = os.environ.get(
    "PLANNER_HARD_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "reviews-medicine-4class.jsonl")
)
"""The harder development set beside the project (``PLANNER_HARD_DATA`` overrides its path)."""
CASES: dict[str, dict[str, Any]] = {
    "minilm-medicine": dict(model="minilm", data=MEDICINE, calibration_size=256, batch_size=32, test_size=None),
    "minilm-bbc": dict(model="minilm", data="bbc", calibration_size=256, batch_size=32, test_size=None),
    "smollm2-bbc": dict(model="smollm2", data="bbc", calibration_size=32, batch_size=8, test_size=64),
}
SHARES = (0.5, 0.25)


def uniform_keep(backend: Any, scores: Any, units: Any, share: float) -> dict[str, tuple[int, ...]]:
    """unit -> the heads / neurons ``backend`` keeps at the level nearest ``share`` of the unit."""
    keep = {}
    for unit in units:
        level = min(unit.levels, key=lambda lv: abs(int(lv.kept or 0) - share * unit.size))
        keep[unit.name] = backend.select(scores, unit, level)
    return keep


def row_levels(units: Any, row: Any, source: str) -> list[tuple[Any, Any]]:
    """(unit, level) per attention and FFN unit at ``row`` of a sweep's pareto.csv: the first level
    keeping the row's heads / neurons for that layer."""
    import json

    counts = {"attention": json.loads(row["heads_kept"]), "ffn": json.loads(row["neurons_kept"])}
    out = []
    for kind in ("attention", "ffn"):
        kind_units = [u for u in units if u.kind == kind]
        if len(counts[kind]) != len(kind_units):
            raise SystemExit(f"{source}: {len(counts[kind])} {kind} counts for {len(kind_units)} units: another model?")
        for unit, kept in zip(kind_units, counts[kind], strict=True):
            level = next((lv for lv in unit.levels if int(lv.kept or 0) == kept), None)
            if level is None:
                raise SystemExit(f"{source}: {unit.name} has no level keeping {kept}: another model or table?")
            out.append((unit, level))
    return out


def row_keep(backend: Any, scores: Any, units: Any, row: Any, source: str) -> dict[str, tuple[int, ...]]:
    """unit -> the heads / neurons ``backend`` keeps at the level of ``row`` (a sweep's pareto.csv row)."""
    return {unit.name: backend.select(scores, unit, level) for unit, level in row_levels(units, row, source)}


def sweep_keeps(backend: Any, scores: Any, units: Any, csv: str) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """(label, unit -> kept heads / neurons) of each distinct planner plan in a sweep's pareto.csv."""
    import pandas as pd

    frame = pd.read_csv(csv)
    rows = frame[frame["method"].str.startswith("planner")]
    keeps, seen = [], set()
    for _, row in rows.iterrows():
        key = (row["heads_kept"], row["neurons_kept"])
        if key in seen:
            continue
        seen.add(key)
        label = f"{row['method']} {row['target_speedup']:g}x" + (
            f" @{row['matched_to']}" if pd.notna(row["matched_to"]) else ""
        )
        keeps.append((label, row_keep(backend, scores, units, row, csv)))
    return keeps


def plan_for(keep: dict[str, tuple[int, ...]], units: Any, backend: str) -> Any:
    from planner.records.plan import Plan, UnitChoice

    choices = tuple(
        UnitChoice(
            u.name, u.kind, 1, "heads" if u.kind == "attention" else "neurons", kept=len(keep[u.name]),
            keep=keep[u.name], size=u.size, layer=u.layer,
        )
        for u in units
    )  # fmt: skip
    return Plan(
        model_name="bench", model_fingerprint="-", architecture="-", table={}, target_speedup=2.0, predicted_ms=1.0,
        predicted_speedup=2.0, budget_ms=1.0, backend=backend, solver="uniform", seed=0, units=choices, versions={},
    )  # fmt: skip


def run_case(name: str, sweep: str | None = None) -> list[str]:
    from planner.backends import FisherBackend, MagnitudeBackend
    from planner.models import load_model
    from planner.tasks import build_task
    from planner.tasks.compare import paired_metric_difference

    spec = CASES[name]
    loaded = load_model(spec["model"])
    adapter = loaded.adapter
    with tempfile.TemporaryDirectory() as cache:
        task = build_task(
            loaded, data=spec["data"], seq_len=128, calibration_size=spec["calibration_size"],
            batch_size=spec["batch_size"], seed=0, cache_dir=Path(cache), test_size=spec["test_size"],
        )  # fmt: skip
        dense = task.evaluate(adapter.model).value
        units = [u for u in adapter.units() if u.kind in ("attention", "ffn")]
        lines = []
        makers = (("fisher", FisherBackend),) if sweep else (("fisher", FisherBackend), ("magnitude", MagnitudeBackend))
        for backend_name, make in makers:
            scores = make().score(adapter, task)
            if sweep:
                cuts = sweep_keeps(make(), scores, units, sweep)
            else:
                cuts = [(f"keep {share:.2f}", uniform_keep(make(), scores, units, share)) for share in SHARES]
            for label, keep in cuts:
                plan = plan_for(keep, units, backend_name)
                plain = task.evaluate(make(compensate=False).apply(adapter, plan, task))
                with_bias = task.evaluate(make(compensate=True).apply(adapter, plan, task))
                diff = paired_metric_difference(with_bias, plain)
                scale = 100.0 if plain.name == "accuracy" else 1.0
                line = (
                    f"{name} {backend_name} {label}: {plain.name} dense {scale * dense:.2f}, "
                    f"without {scale * plain.value:.2f}, with {scale * with_bias.value:.2f}, "
                    f"with - without {scale * diff.difference:+.2f} "
                    f"[{scale * diff.low:+.2f}, {scale * diff.high:+.2f}] ({diff.verdict})"
                )
                print(line, flush=True)
                lines.append(line)
    return lines


def main() -> None:
    torch.set_num_threads(2)
    np.set_printoptions(precision=3)
    start = time.perf_counter()
    args = sys.argv[1:]
    sweep = None
    if args[:1] == ["--sweep"]:
        if len(args) != 3 or args[1] not in CASES:
            raise SystemExit(f"usage: --sweep CASE PARETO_CSV, CASE one of {', '.join(CASES)}")
        args, sweep = [args[1]], args[2]
    cases = args or list(CASES)
    summary = []
    for case in cases:
        for line in run_case(case, sweep):
            summary.append(line.split(": ", 1)[0].split(" ", 1)[1] + " " + line.rsplit("with - without ", 1)[1])
    print(f"{time.perf_counter() - start:.0f} s; " + "; ".join(summary))


if __name__ == "__main__":
    main()
