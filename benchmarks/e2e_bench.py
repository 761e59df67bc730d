"""End to end on the bundled default (MiniLM + BBC News), 2 CPU cores, batch 32, seq 128.

1. `planner run --speedup 2` cold (empty cache: profile, fit head, Fisher, search, apply, verify,
   correct if short) and then warm (cached table, head and scores), each timed as a subprocess; then
   warm runs at the other targets. The plan's promise: measured / target of these runs.
2. Unless --no-sweep: a sweep at the targets: planner (Fisher, DP + search), uniform allocation
   (Fisher, same table) and planner with magnitude scores; all applied, timed interleaved with the
   dense model, and evaluated on the held-out 20% (single shot, no correction, equal footing).
Last line: ``speedup_ratio_min=<worst measured/target of the runs> acc_drop_2x=<points, warm 2x run>
planner_minus_uniform_3x=<points, sweep> run_seconds_warm=<s>``.

Run: ``.venv/bin/python benchmarks/e2e_bench.py [--runtime onnxruntime] [--no-sweep]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from planner.config import RunConfig
from planner.sweep import run_sweep


def timed_run(
    cache: Path, out: Path, runtime: str, search_seconds: float, speedup: float = 2.0
) -> tuple[float, dict[str, Any]]:
    """Run `planner run` in a subprocess (as a user would); returns (seconds, report)."""
    env = dict(os.environ, PLANNER_CACHE=str(cache), PLANNER_NO_PROGRESS="1")
    command = [
        sys.executable,
        "-m",
        "planner.cli",
        "run",
        "--speedup",
        str(speedup),
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
    report = json.loads((out / "report.json").read_text())
    print(f"attempts: {report['attempts']}")
    return seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--search-seconds", type=float, default=60.0)
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    parser.add_argument("--no-sweep", action="store_true", help="only the runs (the promise), no sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        cache = Path(tmp) / "cache"
        cold, _ = timed_run(cache, Path(tmp) / "cold", args.runtime, args.search_seconds)
        print(f"cold run: {cold:.0f} s")
        warm, warm_report = timed_run(cache, Path(tmp) / "warm", args.runtime, args.search_seconds)
        print(f"warm run: {warm:.0f} s")
        if warm_report["search"]:  # None with --search-seconds 0
            pick = warm_report["search"]["selection"]
            print("final pick: " + ", ".join(f"{c['source']} {c['loss']:.4f}" for c in pick["contenders"]))
        ratios = {2.0: warm_report["measured_speedup"] / 2.0}
        for target in args.speedups:
            if target != 2.0:
                _, report = timed_run(cache, Path(tmp) / f"run{target:g}", args.runtime, args.search_seconds, target)
                ratios[target] = report["measured_speedup"] / target
        for target, ratio in sorted(ratios.items()):
            print(f"planner run at {target:g}x: measured / target = {ratio:.3f}")
        drop_2x = 100 * (warm_report["metric"]["dense"] - warm_report["metric"]["pruned"])
        margin = float("nan")
        top = max(args.speedups)
        if not args.no_sweep:
            config = RunConfig(runtime=args.runtime, search_seconds=args.search_seconds, cache_dir=cache)
            frame = run_sweep(
                config,
                list(args.speedups),
                out=Path(tmp) / "sweep",
                progress=False,
                log=lambda m: print(m, file=sys.stderr),
            )
            frame["ratio"] = frame["measured_speedup"] / frame["target_speedup"]
            columns = [
                "method",
                "solver",
                "target_speedup",
                "predicted_speedup",
                "measured_speedup",
                "ratio",
                "metric",
            ]
            print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            planner = frame[frame["method"] == "planner (fisher)"].set_index("target_speedup")
            uniform = frame[frame["method"] == "uniform (fisher)"].set_index("target_speedup")
            margins = 100 * (planner["metric"] - uniform["metric"])
            for target, value in margins.items():
                print(f"planner - uniform at {target:g}x: {value:+.2f} points")
            margin = float(margins.loc[top])
    print(
        f"speedup_ratio_min={min(ratios.values()):.3f} acc_drop_2x={drop_2x:.2f} "
        f"planner_minus_uniform_{top:g}x={margin:.2f} run_seconds_warm={warm:.0f}"
    )


if __name__ == "__main__":
    main()
