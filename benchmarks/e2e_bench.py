"""End to end on the bundled default (MiniLM + BBC News), 2 CPU cores, batch 32, seq 128.

1. `planner run --speedup 2` cold (empty cache: profile, fit head, Fisher, search, apply, verify) and
   then warm (cached table, head and scores), each timed as a subprocess.
2. A sweep at 1.5x, 2x and 3x: planner (Fisher, DP + 60 s search), uniform allocation (Fisher, same
   table) and planner with magnitude scores; all applied, timed interleaved with the dense model,
   and evaluated on the held-out 20%.
Last line: ``speedup_ratio_min=<measured/target, worst planner row> acc_drop_2x=<points>
planner_minus_uniform_3x=<points> run_seconds_warm=<s>``.

Run: ``.venv/bin/python benchmarks/e2e_bench.py [--runtime onnxruntime] [--search-seconds 60]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planner.pipeline import RunConfig, run_sweep


def timed_run(cache: Path, out: Path, runtime: str, search_seconds: float) -> float:
    env = dict(os.environ, PLANNER_CACHE=str(cache), PLANNER_NO_PROGRESS="1")
    command = [
        sys.executable,
        "-m",
        "planner.cli",
        "run",
        "--speedup",
        "2",
        "--runtime",
        runtime,
        "--search-seconds",
        str(search_seconds),
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"planner run failed:\n{result.stderr[-2000:]}")
    print(result.stdout.strip())
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--search-seconds", type=float, default=60.0)
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        cache = Path(tmp) / "cache"
        cold = timed_run(cache, Path(tmp) / "cold", args.runtime, args.search_seconds)
        print(f"cold run: {cold:.0f} s")
        warm = timed_run(cache, Path(tmp) / "warm", args.runtime, args.search_seconds)
        print(f"warm run: {warm:.0f} s")
        config = RunConfig(runtime=args.runtime, search_seconds=args.search_seconds, cache_dir=cache)
        frame = run_sweep(
            config,
            list(args.speedups),
            out=Path(tmp) / "sweep",
            progress=False,
            log=lambda m: print(m, file=sys.stderr),
        )
    frame["ratio"] = frame["measured_speedup"] / frame["target_speedup"]
    columns = ["method", "target_speedup", "predicted_speedup", "measured_speedup", "ratio", "accuracy"]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    planner = frame[frame["method"] == "planner (fisher)"].set_index("target_speedup")
    uniform = frame[frame["method"] == "uniform (fisher)"].set_index("target_speedup")
    margins = 100 * (planner["accuracy"] - uniform["accuracy"])
    for target, margin in margins.items():
        print(f"planner - uniform at {target:g}x: {margin:+.2f} points")
    dense = float(frame["dense_accuracy"].iloc[0])
    drop_2x = 100 * (dense - float(planner.loc[2.0, "accuracy"])) if 2.0 in planner.index else float("nan")
    top = max(args.speedups)
    print(f"dense accuracy {100 * dense:.2f}%; cold run {cold:.0f} s")
    print(
        f"speedup_ratio_min={planner['ratio'].min():.3f} acc_drop_2x={drop_2x:.2f} "
        f"planner_minus_uniform_{top:g}x={margins.loc[top]:.2f} run_seconds_warm={warm:.0f}"
    )


if __name__ == "__main__":
    main()
