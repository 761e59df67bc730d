"""Does FLAP's bias compensation help the planner's own backends? Quality side only: compensation
changes no shape, so a plan's speed is the same with and without it.

For each real model and data set, every unit is cut to the level nearest a kept share (0.5 and 0.25
of its heads / neurons, what uniform width pruning does at about 2x and 3x), with the heads / neurons
each backend selects, then applied four ways: Fisher (mask tuning) with and without compensation,
magnitude with and without. Test-set metric of each, and the paired difference "with - without" with
its 95% bootstrap interval (test examples never seen by scoring, tuning or the channel means).

Cases: MiniLM (fitted head, s128) on ``../shared/data/reviews-medicine-4class.jsonl`` and on BBC News;
SmolLM2-135M (causal LM, s128, 32 calibration windows) on BBC News.

Run: ``.venv/bin/python benchmarks/compensation_bench.py [case ...]``; the last line holds the figures.
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


def run_case(name: str) -> list[str]:
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
        for backend_name, make in (("fisher", FisherBackend), ("magnitude", MagnitudeBackend)):
            scores = make().score(adapter, task)
            for share in SHARES:
                keep = uniform_keep(make(), scores, units, share)
                plan = plan_for(keep, units, backend_name)
                plain = task.evaluate(make(compensate=False).apply(adapter, plan, task))
                with_bias = task.evaluate(make(compensate=True).apply(adapter, plan, task))
                diff = paired_metric_difference(with_bias, plain)
                scale = 100.0 if plain.name == "accuracy" else 1.0
                line = (
                    f"{name} {backend_name} keep {share:.2f}: {plain.name} dense {scale * dense:.2f}, "
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
    cases = sys.argv[1:] or list(CASES)
    summary = []
    for case in cases:
        for line in run_case(case):
            summary.append(line.split(": ", 1)[0].split(" ", 1)[1] + " " + line.rsplit("with - without ", 1)[1])
    print(f"{time.perf_counter() - start:.0f} s; " + "; ".join(summary))


if __name__ == "__main__":
    main()
