"""Does the C heap's state move decode speedups? The dense and two shrunk SmolLM2 models timed in fresh
processes on three heaps: "fresh" (glibc's as a new process has it: the profiler's settling switched
off, as tables before schema 9 were timed), "settled" (``profilers.heap.settle_heap`` first, as the
``planner`` command does) and "tunables" (mmap and trim thresholds raised through glibc's environment
tunables, as a process that has allocated and freed a lot behaves).

Each child process loads the model, shrinks it to uniform's 3x levels (no heads, 128 neurons) and to a
plan with 2 heads in 1 KV group and 256 neurons per layer, and times the three interleaved
(``verify_models``, ``--rounds`` paired rounds); children alternate fresh / settled / tunables,
``--repeats`` each. Last line: ``dense_ms fresh/settled/tunables=<a>/<b>/<c> uniform_speedup=<a>/<b>/<c>
thin_speedup=<a>/<b>/<c>`` (medians over the children).

Run: ``.venv/bin/python benchmarks/heap_drift.py [--seq-len 512] [--rounds 15] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = ("fresh", "settled", "tunables")

TUNABLES_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
    "MALLOC_TOP_PAD_": str(64 * 1024 * 1024),
}
"""glibc tunables: blocks up to 32 MiB from the heap, up to 1 GiB of free heap kept, 64 MiB asked for at a time."""


def child(mode: str, seq_len: int, rounds: int) -> dict[str, float]:
    import dataclasses

    import profilers.heap
    import profilers.profiler
    from planner.config import Measurement
    from planner.models import load_model
    from planner.stages.verify import verify_models

    if mode == "fresh":
        profilers.profiler.settle_heap = lambda: False
    elif mode == "settled":
        profilers.heap.settle_heap()  # as the planner command does, before any model is built
    measurement = Measurement("torch", "cpu", "float32", 1, seq_len, 2, rounds, 0, "decode", 0, 0)
    adapter = load_model("smollm2", batch_size=1, seq_len=seq_len).adapter

    def at(heads: int, groups: int | None, neurons: int) -> dict[str, int]:
        levels = {}
        for unit in adapter.units():
            want = heads if unit.kind == "attention" else neurons
            matches = [
                lv
                for lv in unit.levels
                if lv.kept == want and (unit.kind != "attention" or lv.groups == groups or want == 0)
            ]
            levels[unit.name] = matches[0].index
        return levels

    models = {
        "dense": adapter.model,
        "uniform": adapter.shrink_to_levels(at(0, 0, 128)),
        "thin": adapter.shrink_to_levels(at(2, 1, 256)),
    }
    check = verify_models(adapter, models, dataclasses.replace(measurement, max_rounds=None))
    return {
        "dense_ms": check["dense"].median_ms,
        "uniform": check.speedup("uniform").value,
        "thin": check.speedup("thin").value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seq_len, args.rounds)))
        return
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in results:
            command = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--seq-len",
                str(args.seq_len),
                "--rounds",
                str(args.rounds),
            ]
            env = {**os.environ, **(TUNABLES_ENV if mode == "tunables" else {})}
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
            print(mode, results[mode][-1], flush=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    cells = " ".join(
        f"{label}=" + "/".join(f"{median(mode, key):.2f}" for mode in MODES)
        for label, key in (
            ("dense_ms fresh/settled/tunables", "dense_ms"),
            ("uniform_speedup", "uniform"),
            ("thin_speedup", "thin"),
        )
    )
    print(cells)


if __name__ == "__main__":
    main()
