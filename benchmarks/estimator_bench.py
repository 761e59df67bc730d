"""Which latency estimator survives a busy machine? (MiniLM units and whole models, torch, 2 threads)

Times a handful of real workloads (the dense MiniLM, a 50% anchor, the dense attention and FFN
units, a small FFN level) in interleaved rounds, three times: quiet, with a CPU hog on one core
(a child process spinning, started and stopped here), and quiet again. For each estimator (min,
p10, p25, median, mean) it prints how far the hogged estimate moved from the quiet one and how far
the two quiet runs disagree, relative to the quiet estimate.

Last line: ``shift_pct_<estimator>=<median over workloads of |hogged / quiet - 1|>`` for each.

Run: ``.venv/bin/python benchmarks/estimator_bench.py [--rounds 20]``
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from planner.config import RunConfig
from planner.models import load_model
from planner.models.phases import Shape
from planner.stages.profile.measure import anchor_levels
from profilers import Profiler, Workload
from profilers.hog import cpu_hog

ESTIMATORS = {
    "min": lambda a: float(np.min(a)),
    "p10": lambda a: float(np.percentile(a, 10)),
    "p25": lambda a: float(np.percentile(a, 25)),
    "median": lambda a: float(np.median(a)),
    "mean": lambda a: float(np.mean(a)),
}


def workloads(batch: int, seq: int) -> list[Workload]:
    loaded = load_model("minilm")
    adapter = loaded.adapter
    shape = Shape(batch, seq)
    units = adapter.units()
    out = [Workload("dense", *adapter.timed(adapter.model, shape), steady=True)]
    anchor = adapter.shrink_to_levels(anchor_levels(units, 0.5))
    out.append(Workload("anchor50", *adapter.timed(anchor, shape), steady=True))
    wanted = {("bert-attention", 0), ("bert-ffn", 0), ("bert-ffn", 20)}
    for w in adapter.workloads(units, shape, runtime="torch", device="cpu", dtype=__import__("torch").float32):
        if (w.signature.split(":")[0], w.level) in wanted:
            out.append(Workload(f"{w.signature.split(':')[0]}|{w.level}", w.module, w.inputs))
    return out


def run(rounds: int, hog: bool, seed: int) -> dict[str, list[float]]:
    settings = RunConfig(rounds=rounds, seed=seed).measurement().profiler_settings()
    work = workloads(32, 128)
    if hog:
        with cpu_hog(cores=1):
            stats = Profiler(settings).measure(work, progress=False)
    else:
        stats = Profiler(settings).measure(work, progress=False)
    return {k: list(s.samples_ms) for k, s in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    quiet = run(args.rounds, False, 0)
    hogged = run(args.rounds, True, 1)
    again = run(args.rounds, False, 2)
    shifts: dict[str, list[float]] = {name: [] for name in ESTIMATORS}
    print(f"{'workload':<18} {'estimator':>9} {'quiet ms':>9} {'hog %':>7} {'again %':>8}")
    for key in quiet:
        for name, fn in ESTIMATORS.items():
            base = fn(quiet[key])
            hog = 100 * (fn(hogged[key]) / base - 1)
            rerun = 100 * (fn(again[key]) / base - 1)
            shifts[name].append(abs(hog))
            print(f"{key:<18} {name:>9} {base:>9.2f} {hog:>+7.1f} {rerun:>+8.1f}")
    print(" ".join(f"shift_pct_{name}={statistics.median(v):.1f}" for name, v in shifts.items()))


if __name__ == "__main__":
    main()
