"""Does the latency table predict real end-to-end latency? Random and lopsided configurations.

For each runtime: profile the model (timed), then build physically shrunk models and time all of
them interleaved with the dense model in one run (paired, as verification does). Configuration
families:
- random: 8 configurations from 1x to the table's maximum (every unit near a fraction of its range,
  jittered);
- extreme: whole FFN / MLP blocks removed in half the layers (alternating, and all in one half),
  whole attention blocks removed the same two ways, and both removed in alternating layers, the rest
  dense; then the same patterns over units at half their range instead of dense;
- depth: whole layers skipped (both units removed; evenly spread, 10% to 60% of the layers, the rest
  dense or at half range), on decoders whose layers can be skipped;
- anchors: the table's own calibration anchors (uniform and mixed whole models), timed again. Their
  errors share one sign and size when the table's dense time (the denominator of every predicted
  speedup) did not settle or moved between processes.

The error compares the table's prediction relative to dense with the measurement relative to dense
in the same run (slow drifts of the machine's load between profiling and checking cancel):

    error_pct = 100 * (predicted_ms / table_dense_ms) / (measured_ms / measured_dense_ms) - 100

Models: ``minilm`` (bundled), ``smollm2`` (bundled), ``bert-base`` (random weights made here: 12
layers, hidden 768, 12 heads, FFN 3072). Last line: ``median_abs_error_pct=<x> max_abs_error_pct=<y>
profile_seconds=<z>`` (worst family and runtime for the errors, slowest runtime for the time), after
one line per family.

Run: ``.venv/bin/python benchmarks/profile_accuracy.py [--model minilm] [--runtimes torch onnxruntime]
[--batch-size 32 --seq-len 128] [--phase prefill|decode | --generate N] [--families random extreme depth anchors]
[--device cuda --dtype float16 --execution cuda-graphs] [--random-weights]`` (``--random-weights``: the
bundled model's real shape without its weight files; timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from planner.config import Measurement
from planner.models import LoadedModel, load_model
from planner.models.fingerprint import model_fingerprint
from planner.stages.profile.measure import DENSE_KEY, calibration_anchors, profile_model
from planner.stages.verify import verify_models
from profilers.heap import settle_heap

CONFIGS = 8


def bert_base() -> LoadedModel:
    """A BERT-base-shaped encoder with random weights (seeded)."""
    import torch
    from transformers import BertConfig, BertModel

    from planner.models import BertAdapter

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    adapter = BertAdapter(model.eval(), name="bert-base-random")
    return LoadedModel("bert-base", adapter, model_fingerprint(model), None)


def random_levels(units, rng: np.random.Generator, fraction: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Per unit a level near ``fraction`` of its range, jittered by +-25% of the range."""
    out = {}
    for unit in units:
        top = len(unit.levels) - 1
        jitter = rng.uniform(-0.25, 0.25) * top
        out[unit.name] = int(np.clip(round(fraction * top + jitter), 0, top))
    return out


def extreme_levels(units) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Whole blocks removed in half the layers (alternating / one half), the rest dense or at half range."""
    layers = sorted({u.layer for u in units})
    half = set(layers[: len(layers) // 2])
    patterns = {
        "ffn-alt": lambda u: u.kind == "ffn" and u.layer % 2 == 0,
        "ffn-half": lambda u: u.kind == "ffn" and u.layer in half,
        "att-alt": lambda u: u.kind == "attention" and u.layer % 2 == 0,
        "att-half": lambda u: u.kind == "attention" and u.layer in half,
        "both-alt": lambda u: u.layer % 2 == 0,
    }
    out: dict[str, dict[str, int]] = {}
    for name, removed in patterns.items():
        for rest, fraction in (("dense", 0.0), ("mid", 0.5)):
            out[f"{name}/{rest}"] = {
                u.name: len(u.levels) - 1 if removed(u) else round(fraction * (len(u.levels) - 1)) for u in units
            }
    return out


def depth_levels(adapter) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Evenly spread layers skipped (attention and FFN at their empty level), the rest dense or at half
    range; empty where the family's layers cannot be skipped."""
    if getattr(adapter, "layer_skip_refusal", lambda: "no")() is not None:
        return {}
    units = adapter.units()
    layers = sorted({int(u.layer) for u in units})
    empty = {u.name: next(lv.index for lv in u.levels if lv.kept == 0) for u in units}
    out: dict[str, dict[str, int]] = {}
    for share in (0.1, 0.2, 0.33, 0.45, 0.6):
        count = max(1, round(share * len(layers)))
        chosen = {layers[int(i)] for i in np.linspace(0, len(layers) - 1, count).round()}
        for rest, fraction in (("dense", 0.0), ("mid", 0.5)):
            out[f"skip{count}/{rest}"] = {
                u.name: empty[u.name] if u.layer in chosen else round(fraction * (len(u.levels) - 1)) for u in units
            }
    return out


def run(loaded: LoadedModel, measurement: Measurement, families: list[str]) -> tuple[dict[str, list[float]], float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        table = profile_model(loaded, measurement, out=Path(tmp) / "table.csv", progress=False)
        profile_seconds = time.perf_counter() - start
    adapter = loaded.adapter
    units = adapter.units()
    configs: dict[str, dict[str, int]] = {}
    if "random" in families:
        rng = np.random.default_rng(measurement.seed)
        for i, f in enumerate(np.linspace(0.0, 0.95, CONFIGS)):
            configs[f"random/{i}"] = random_levels(units, rng, float(f))
    if "extreme" in families:
        configs.update(extreme_levels(units))
    if "depth" in families:
        configs.update({f"depth/{k}": v for k, v in depth_levels(adapter).items()})
    if "anchors" in families:
        configs.update(
            {
                f"anchors/{k.strip('_')}": v
                for k, v in calibration_anchors(units, by_kind=table.meta.context_basis == "width").items()
                if k != DENSE_KEY
            }
        )
    models = {"dense": adapter.model, **{name: adapter.shrink_to_levels(levels) for name, levels in configs.items()}}
    check = verify_models(adapter, models, dataclasses.replace(measurement, max_rounds=None))
    runtime = measurement.runtime
    m = table.meta
    print(
        f"[{runtime} {m.execution}] {adapter.name} {m.phase} batch {m.batch_size} x seq {m.seq_len} on {m.device} "
        f"{m.dtype}: table dense {m.dense_ms:.2f} ms "
        f"(noisy: {m.noisy}, foreign load {m.foreign_load}); max speedup {table.max_speedup():.2f}x; profile "
        f"{profile_seconds:.1f} s; check rounds {check.rounds} (busy {check.busy_rounds})"
    )
    if m.noisy:
        print(f"[{runtime}] noisy workloads: {', '.join(m.noisy_workloads)}")
    print(
        f"{'runtime':>11} {'config':>16} {'pred_ms':>9} {'meas_p10':>9} {'pred_x':>7} {'meas_x':>7} {'err_pct':>8} "
        f"{'med_x':>7} {'med_err':>8}"
    )
    errors: dict[str, list[float]] = {}
    for name, levels in configs.items():
        predicted = table.predict_ms(levels)
        measured = check.speedup(name).value  # p10 dense / p10 config, same rounds (what is promised)
        median = check.median_speedup(name).value  # median of the per-round ratios (shown beside)
        pred_x = m.dense_ms / predicted
        err = 100.0 * (measured / pred_x - 1.0)  # = (predicted / dense) / (measured / dense) - 1
        family = name.split("/")[0] if name.startswith(("random", "anchors", "depth")) else "extreme"
        errors.setdefault(family, []).append(abs(err))
        print(
            f"{runtime:>11} {name:>16} {predicted:>9.1f} {check[name].p10_ms:>9.1f} {pred_x:>7.2f} {measured:>7.2f} "
            f"{err:>8.2f} {median:>7.2f} {100.0 * (median / pred_x - 1.0):>8.2f}"
        )
    return errors, profile_seconds


def main() -> None:
    settle_heap()  # as the planner command does, before any model is built
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm, smollm2 or bert-base")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--phase", default="prefill")
    parser.add_argument("--generate", type=int, default=0, help="a reply of N tokens (prefill + N decode steps)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--families", nargs="+", default=["random", "extreme"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--execution", default="eager", help="eager or cuda-graphs (torch on CUDA)")
    parser.add_argument("--random-weights", action="store_true", help="the bundled model's shape, random weights")
    args = parser.parse_args()
    batch = args.batch_size or {"minilm": 32, "smollm2": 8, "bert-base": 8}[args.model]
    loaded = (
        bert_base()
        if args.model == "bert-base"
        else load_model(args.model, batch_size=batch, seq_len=args.seq_len, random_weights=args.random_weights)
    )
    medians, maxima, seconds = [], [], []
    for runtime in args.runtimes:
        measurement = Measurement(
            runtime=runtime,
            device=args.device,
            dtype=args.dtype,
            batch_size=batch,
            seq_len=args.seq_len,
            threads=0,
            rounds=args.rounds,
            warmup=0,
            phase="generate" if args.generate else args.phase,
            generate_tokens=args.generate,
            seed=args.seed,
            execution=args.execution,
        )
        errors, profile_seconds = run(loaded, measurement, args.families)
        seconds.append(profile_seconds)
        for family, values in errors.items():
            medians.append(statistics.median(values))
            maxima.append(max(values))
            print(
                f"[{runtime}] {family}: median_abs_error_pct={statistics.median(values):.2f} "
                f"max_abs_error_pct={max(values):.2f} (n={len(values)})"
            )
        print(f"[{runtime}] profile_seconds={profile_seconds:.1f}")
    print(
        f"median_abs_error_pct={max(medians):.2f} max_abs_error_pct={max(maxima):.2f} "
        f"profile_seconds={max(seconds):.1f}"
    )


if __name__ == "__main__":
    main()
