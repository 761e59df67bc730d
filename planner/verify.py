"""Measured verification: dense vs pruned end-to-end latency, interleaved in one process on the
same runtime, plus test accuracy. Every speed promise of a plan is checked here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from planner.models.base import OutputTensor
from profilers import Profiler, ProfilerSettings, Workload


@dataclass(frozen=True)
class LatencyCheck:
    """End-to-end latencies measured interleaved in one run (ms) and the measured speedup."""

    dense_ms: float
    pruned_ms: float
    dense_p10_ms: float
    dense_p90_ms: float
    pruned_p10_ms: float
    pruned_p90_ms: float
    rounds: int

    @property
    def measured_speedup(self) -> float:
        return self.dense_ms / self.pruned_ms


def measure_models(
    models: dict[str, nn.Module],
    inputs: tuple[torch.Tensor, ...],
    *,
    runtime: str = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 0,
    rounds: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, tuple[float, float, float]]:
    """Median, p10 and p90 latency (ms) of each model, all timed interleaved in a steady state, as deployed.

    Models take ``(input_ids, attention_mask)`` keyword inputs (BERT-family) or positional inputs.
    """
    workloads = [
        Workload(
            name,
            OutputTensor(model, ("input_ids", "attention_mask")) if _takes_ids(model) else OutputTensor(model),
            inputs,
            steady=True,
        )
        for name, model in models.items()
    ]
    settings = ProfilerSettings(runtime=runtime, device=device, dtype=dtype, threads=threads, rounds=rounds, seed=seed)
    stats = Profiler(settings).measure(workloads, progress=progress, description="verifying latency")
    return {k: (s.median_ms, s.p10_ms, s.p90_ms) for k, s in stats.items()}


def _takes_ids(model: nn.Module) -> bool:
    from planner.classifier import MeanPoolClassifier

    return not isinstance(model, MeanPoolClassifier)


def measure_speedup(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    **settings: object,
) -> LatencyCheck:
    """Dense and pruned latency measured interleaved; see ``measure_models`` for the settings."""
    result = measure_models({"dense": dense, "pruned": pruned}, inputs, **settings)  # type: ignore[arg-type]
    d, p = result["dense"], result["pruned"]
    return LatencyCheck(d[0], p[0], d[1], d[2], p[1], p[2], int(settings.get("rounds", 10)))  # type: ignore[call-overload]


def verify_pruned(
    *,
    model: str,
    pruned: str | Path,
    runtime: str = "torch",
    device: str = "cpu",
    batch_size: int | None = None,
    seq_len: int | None = None,
    rounds: int = 10,
) -> LatencyCheck:
    """``planner verify``: the dense model vs a saved pruned one, at the plan's shape by default."""
    import json

    from planner.models import load_model
    from planner.pruned_io import encoder_of, load_pruned

    config = json.loads((Path(pruned) / "pruned_config.json").read_text(encoding="utf-8"))
    table = config["plan"]["table"]
    batch = batch_size or int(table["batch_size"])
    seq = seq_len or int(table["seq_len"])
    loaded = load_model(model, batch_size=batch, seq_len=seq)
    pruned_model = encoder_of(load_pruned(pruned))
    inputs = loaded.adapter.example_inputs(batch, seq)
    # Encoder against encoder: a task head (if any) is the same size on both sides.
    dense_model = encoder_of(loaded.model)
    return measure_speedup(dense_model, pruned_model, inputs, runtime=runtime, device=device, rounds=rounds)
