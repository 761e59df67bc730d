"""Pruning cost on the bundled MiniLM with a classification head (BBC News), 2x target.

Times, for one plan at 2x on a latency table of this machine (torch, CPU, batch 32, seq 128):
- Fisher: mask gradients on 256 calibration documents + rearrangement (plan) + mask tuning and
  folding + shrinking (apply);
- magnitude: scores + plan + shrinking.
The table is profiled with few rounds (its accuracy is not what is measured here) and the head is
fitted (or loaded from cache) before the clocks start. Test accuracies are printed for reference.
Last line: ``fisher_seconds=<x> magnitude_seconds=<y>``.

Run: ``.venv/bin/python benchmarks/prune_bench.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from planner.backends import get_backend
from planner.config import DEFAULT_CACHE, RunConfig
from planner.models import load_model
from planner.stages.profile.measure import profile_model
from planner.stages.solve import solve_plan
from planner.tasks import build_task

SPEEDUP = 2.0


def main() -> None:
    loaded = load_model("minilm")
    start = time.perf_counter()
    task = build_task(
        loaded, data="bbc", seq_len=128, calibration_size=256, batch_size=32, seed=0, cache_dir=DEFAULT_CACHE
    )
    print(
        f"task: {len(task.calibration)} calibration / {len(task.test)} test documents, "
        f"head ready in {time.perf_counter() - start:.1f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        table = profile_model(loaded, RunConfig(rounds=3).measurement(), out=Path(tmp) / "t.csv", progress=False)
    dense_acc = task.evaluate(loaded.model).value
    print(f"dense test accuracy {dense_acc:.4f}; table max speedup {table.max_speedup():.2f}x")
    seconds = {}
    for name in ("fisher", "magnitude"):
        backend = get_backend(name)
        start = time.perf_counter()
        scores = backend.score(loaded.adapter, task)
        scored = time.perf_counter()
        plan = solve_plan(loaded=loaded, table=table, scores=scores, backend=backend, speedup=SPEEDUP)
        planned = time.perf_counter()
        pruned = backend.apply(loaded.adapter, plan, task)
        done = time.perf_counter()
        seconds[name] = done - start
        acc = task.evaluate(pruned).value
        print(
            f"{name:>9}: score {scored - start:.1f} s, plan {planned - scored:.1f} s, apply {done - planned:.1f} s, "
            f"total {seconds[name]:.1f} s; predicted {plan.predicted_speedup:.2f}x; test accuracy {acc:.4f} "
            f"({100 * (acc - dense_acc):+.1f} points)"
        )
    print(f"fisher_seconds={seconds['fisher']:.1f} magnitude_seconds={seconds['magnitude']:.1f}")


if __name__ == "__main__":
    main()
