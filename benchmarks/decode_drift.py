"""Does a pruned model's decode speedup stay put between runs? The same models, two protocols, several passes.

Three whole models of one decoder (dense, every unit at half its range, every unit at three quarters:
the latency table's own anchors) are prepared once. Each pass times them with the profiler's rounds
(interleaved, random order, one untimed call before each timed one, the table's estimator) and then
with a plain loop (the same untimed + timed pair in a fixed order, medians), in one process. If the
two protocols agree within a pass but the ratios move between passes, a speedup measured in one run
cannot be set against one measured in another (the sweep times each re-plan beside its baseline for
this reason).

Run: ``.venv/bin/python benchmarks/decode_drift.py [--model smollm2] [--seq-len 512] [--passes 2]``.
Last line: ``dense_ms=<min>-<max> half=<min>-<max> three_quarters=<min>-<max>`` (ratios to dense,
over every pass and protocol).
"""

from __future__ import annotations

import argparse
import statistics

from profilers.heap import settle_heap

FRACTIONS = {"dense": 0.0, "half": 0.5, "three_quarters": 0.75}


def main() -> None:
    settle_heap()  # as the planner command does, before any model is built
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens already in the KV cache")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from planner.config import Measurement
    from planner.models import load_model
    from planner.models.phases import shape_of
    from planner.stages.profile.measure import anchor_levels
    from profilers import Profiler, Workload

    measurement = Measurement("torch", "cpu", "float32", 1, args.seq_len, 2, args.rounds, 0, "decode", 0, 0)
    loaded = load_model(args.model, batch_size=1, seq_len=args.seq_len)
    adapter, units, shape = loaded.adapter, loaded.adapter.units(), shape_of(measurement)
    workloads = []
    for name, fraction in FRACTIONS.items():
        model = adapter.shrink_to_levels(anchor_levels(units, fraction)) if fraction else adapter.model
        module, inputs = adapter.timed(model, shape)
        workloads.append(Workload(name, module, inputs, steady=True))
    profiler = Profiler(measurement.profiler_settings())
    runners = {
        w.key: profiler.runtime.prepare(w.module, w.inputs, device="cpu", dtype="float32", threads=2) for w in workloads
    }
    dense_ms: list[float] = []
    ratios: dict[str, list[float]] = {name: [] for name in FRACTIONS if name != "dense"}
    for index in range(1, args.passes + 1):
        stats = profiler.measure(workloads, progress=False)
        samples: dict[str, list[float]] = {key: [] for key in runners}
        with profiler.runtime.threads(2):
            for _ in range(args.rounds):
                for key, run in runners.items():
                    run()
                    samples[key].append(run())
        loop = {key: statistics.median(values) for key, values in samples.items()}
        for protocol, times in (("profiler", {k: stats[k].estimate_ms for k in runners}), ("loop", loop)):
            dense_ms.append(times["dense"])
            line = [f"pass {index} {protocol:8s} dense {times['dense']:6.1f} ms"]
            for name in ratios:
                ratios[name].append(times[name] / times["dense"])
                line.append(f"{name} {ratios[name][-1]:.3f}")
            print(" | ".join(line), flush=True)
    print(
        f"dense_ms={min(dense_ms):.1f}-{max(dense_ms):.1f} "
        + " ".join(f"{name}={min(v):.3f}-{max(v):.3f}" for name, v in ratios.items())
    )


if __name__ == "__main__":
    main()
