"""The verify stage: dense vs pruned end-to-end latency, measured interleaved in one process on the
runtime and shape the plan was made for (every speed promise of a plan is checked here), and the
pruned model's quality on the guard split (``check_quality``: every quality promise).

Paired: every round times each model once, in a fresh order; the speedup is the median of the
per-round ratios with its 95% interval. Rounds are added (up to 3 x the minimum) while an interval
is wider than ``VERIFY_TOLERANCE``; rounds during which other processes kept the machine busy are
left out of the ratios when enough quiet ones remain."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from planner.config import Measurement
from planner.config.quality import QualityLimit
from planner.models.phases import shape_of
from planner.records.quality import GuardCheck
from planner.records.verification import VERIFY_TOLERANCE, ModelTiming, Verification
from planner.tasks.base import MetricResult, Task
from planner.tasks.compare import paired_statistic
from profilers import Profiler, Workload
from profilers.timing import SampleStore


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
    settings = measurement.profiler_settings()
    stats = Profiler(settings).measure(
        workloads, progress=progress, description="verifying latency", pending=_until_settled(list(models))
    )
    timings = {k: ModelTiming(s.median_ms, s.p10_ms, s.p90_ms, s.samples_ms) for k, s in stats.items()}
    return Verification(
        timings=timings,
        runtime=measurement.runtime,
        device=measurement.device,
        loads=tuple(stats.loads),
        execution=measurement.execution,
    )


def _until_settled(names: list[str]) -> Callable[[SampleStore], list[str]]:
    """Keep timing every model (paired rounds) while some speedup's interval is wider than the tolerance."""

    def pending(store: SampleStore) -> list[str]:
        probe = Verification(
            timings={k: ModelTiming(0.0, 0.0, 0.0, tuple(store.samples[k])) for k in names},
            runtime="",
            device="",
            loads=tuple(store.loads),
        )
        wide = any(probe.speedup(k).width > VERIFY_TOLERANCE for k in names if k != probe.reference)
        return names if wide else []

    return pending


def check_quality(task: Task, reference: MetricResult, model: nn.Module, limit: QualityLimit) -> GuardCheck:
    """``model``'s loss against the dense model's ``reference`` (``task.evaluate(dense, task.guard)``) on
    the guard split, in ``limit``'s unit, with its paired 95% interval."""
    pruned = task.evaluate(model, task.guard)
    loss, low, high = paired_statistic(reference, pruned, limit.loss)
    return GuardCheck(loss, low, high, reference.examples, limit.value)
