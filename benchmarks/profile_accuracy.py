"""Does the latency table predict real end-to-end latency? (bundled MiniLM, batch 32, seq 128)

For each runtime (torch and onnxruntime on CPU): profile the model (timed), draw 8 random
structured configurations spanning 1x to the table's maximum speedup (random heads and neurons
kept per layer), build each as a physically shrunk model, and time all of them interleaved with
the dense model in one run. The error compares the table's predicted latency relative to dense
with the measured one relative to dense measured in the same run (so slow drifts of machine load
between profiling and checking cancel):

    error_pct = 100 * (predicted_ms / table_dense_ms) / (measured_ms / measured_dense_ms) - 100

Last line: ``median_abs_error_pct=<x> max_abs_error_pct=<y> profile_seconds=<z>`` (worst runtime
for the errors, slowest runtime for the profile time).

Run: ``.venv/bin/python benchmarks/profile_accuracy.py [--runtimes torch onnxruntime]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from planner.config import RunConfig
from planner.models import load_model
from planner.profile import profile_model, profiler_settings
from profilers import Profiler, Workload

CONFIGS = 8


def random_levels(units, rng: np.random.Generator, fraction: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Per unit a level near ``fraction`` of its range, jittered by +-25% of the range."""
    out = {}
    for unit in units:
        top = len(unit.levels) - 1
        jitter = rng.uniform(-0.25, 0.25) * top
        out[unit.name] = int(np.clip(round(fraction * top + jitter), 0, top))
    return out


def run(runtime: str, rounds: int, seed: int) -> tuple[list[float], float]:
    loaded = load_model("minilm")
    measurement = RunConfig(runtime=runtime, batch_size=32, seq_len=128, rounds=rounds, seed=seed).measurement()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        table = profile_model(loaded, measurement, out=Path(tmp) / "table.csv", progress=False)
        profile_seconds = time.perf_counter() - start
    adapter = loaded.adapter
    units = adapter.units()
    rng = np.random.default_rng(seed)
    fractions = np.linspace(0.0, 0.95, CONFIGS)
    configs = [random_levels(units, rng, float(f)) for f in fractions]
    inputs = adapter.example_inputs(32, 128)
    workloads = [Workload("dense", adapter.forward_module(), inputs, steady=True)]
    for i, levels in enumerate(configs):
        shrunk = adapter.shrink_to_levels(levels)
        workloads.append(Workload(f"config{i}", adapter.forward_module_of(shrunk), inputs, steady=True))
    profiler = Profiler(profiler_settings(measurement))
    stats = profiler.measure(workloads, progress=False)
    dense_now = stats["dense"].median_ms
    print(
        f"[{runtime}] table dense {table.meta.dense_ms:.1f} ms, dense now {dense_now:.1f} ms "
        f"(p10 {stats['dense'].p10_ms:.1f}, p90 {stats['dense'].p90_ms:.1f}); max speedup {table.max_speedup():.2f}x; "
        f"profile {profile_seconds:.1f} s"
    )
    anchors = ", ".join(
        f"{a:.0f}->{b:.0f}" for a, b in zip(table.meta.calibration_sum_ms, table.meta.calibration_total_ms, strict=True)
    )
    print(
        f"[{runtime}] calibration anchors (sum of unit ms -> measured ms): {anchors}; "
        f"table dense p10/p90 {table.meta.dense_p10_ms:.1f}/{table.meta.dense_p90_ms:.1f}"
    )
    print(
        f"{'runtime':>11} {'cfg':>4} {'pred_ms':>8} {'meas_ms':>8} {'pred_x':>7} {'meas_x':>7} "
        f"{'err_pct':>8} {'spread':>7}"
    )
    errors = []
    for i, levels in enumerate(configs):
        predicted = table.predict_ms(levels)
        measured = stats[f"config{i}"]
        pred_rel = predicted / table.meta.dense_ms
        meas_rel = measured.median_ms / dense_now
        err = 100.0 * (pred_rel / meas_rel - 1.0)
        errors.append(abs(err))
        print(
            f"{runtime:>11} {i:>4} {predicted:>8.1f} {measured.median_ms:>8.1f} {1 / pred_rel:>7.2f} "
            f"{1 / meas_rel:>7.2f} {err:>8.2f} {measured.spread:>7.2f}"
        )
    return errors, profile_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    medians, maxima, seconds = [], [], []
    for runtime in args.runtimes:
        errors, profile_seconds = run(runtime, args.rounds, args.seed)
        medians.append(statistics.median(errors))
        maxima.append(max(errors))
        seconds.append(profile_seconds)
        print(
            f"[{runtime}] median_abs_error_pct={medians[-1]:.2f} max_abs_error_pct={maxima[-1]:.2f} "
            f"profile_seconds={profile_seconds:.1f}"
        )
    print(
        f"median_abs_error_pct={max(medians):.2f} max_abs_error_pct={max(maxima):.2f} "
        f"profile_seconds={max(seconds):.1f}"
    )


if __name__ == "__main__":
    main()
