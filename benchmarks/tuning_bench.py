"""Time of one mask-tuning pass on the bundled SmolLM2-135M (the cost of each tuning recipe of an apply).

Builds the causal-LM task on the bundled text (``--windows`` calibration windows of ``--seq-len``
tokens), cuts every layer to its middle level (first-kept heads / neurons: no scores needed) and
times ``tune_decoder`` ``--repeats`` times after one untimed warm-up pass. To compare two versions of
the code, run this file from both trees in turn, alternating, and compare medians; the printed
checksum of the tuned scales says whether both computed the same thing.

Last line: ``tuning_seconds_median=<s> spread=<max - min> checksum=<sum of |scales| and |shifts|>``.

Run: ``.venv/bin/python benchmarks/tuning_bench.py --seq-len 256 --windows 16 --repeats 3``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from planner.backends.tuning_decoder import tune_decoder
from planner.config import DEFAULT_CACHE
from planner.models import load_model
from planner.models.units import first_kept
from planner.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16, help="calibration windows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", default="stream", choices=["stream", "block"])
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model("smollm2")
    task = build_task(
        loaded,
        data="bbc",
        seq_len=args.seq_len,
        calibration_size=args.windows,
        batch_size=8,
        seed=0,
        cache_dir=DEFAULT_CACHE,
    )
    adapter = loaded.adapter
    keep = {u.name: first_kept(u, u.levels[len(u.levels) // 2]) for u in adapter.units()}
    seconds, checksum = [], 0.0
    for repeat in range(args.repeats + 1):
        start = time.perf_counter()
        tuned = tune_decoder(adapter, keep, task, target=args.target, intercept=True)
        if repeat:  # the first pass warms caches and allocators
            seconds.append(time.perf_counter() - start)
        checksum = float(sum(v.abs().sum() for v in (*tuned.scales.values(), *tuned.shifts.values())))
    print(f"passes: {', '.join(f'{s:.1f}' for s in seconds)} s ({args.windows} windows x {args.seq_len} tokens)")
    spread = max(seconds) - min(seconds)
    print(f"tuning_seconds_median={statistics.median(seconds):.1f} spread={spread:.1f} checksum={checksum:.6g}")


if __name__ == "__main__":
    main()
