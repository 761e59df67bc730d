"""The verify stage: dense vs pruned end-to-end latency, measured interleaved in one process on the
runtime and shape the plan was made for. Every speed promise of a plan is checked here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from planner.config import Measurement
from planner.profile import profiler_settings, shape_of
from planner.records.verification import ModelTiming, Verification
from profilers import Profiler, Workload


def verify_models(
    adapter: Any,
    models: Mapping[str, nn.Module],
    measurement: Measurement,
    *,
    progress: bool = False,
) -> Verification:
    """Time every model interleaved (``measurement.rounds`` rounds), in a steady state, as deployed.

    Args:
        adapter: the dense model's adapter (it builds the timed forward for the measurement's
            shape and phase: a prefill, a decode step over a KV cache, or a whole greedy reply).
        models: name -> model (an adapter-level model: the dense one or shrunk copies). The key
            ``"dense"`` is the reference of the speedups.
    """
    shape = shape_of(measurement)
    workloads = []
    for name, model in models.items():
        module, inputs = adapter.timed(model, shape)
        workloads.append(Workload(name, module, inputs, steady=True))
    stats = Profiler(profiler_settings(measurement)).measure(
        workloads, progress=progress, description="verifying latency"
    )
    timings = {k: ModelTiming(s.median_ms, s.p10_ms, s.p90_ms, s.samples_ms) for k, s in stats.items()}
    return Verification(timings=timings, runtime=measurement.runtime, device=measurement.device)
