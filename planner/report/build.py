"""The report stage: the records of a run (table, plan, verification, metrics, search) -> ``Report``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from planner.config.quality import QualityLimit
from planner.records.headroom import Headroom
from planner.records.plan import Plan
from planner.records.quality import GuardCheck, verdict
from planner.records.report import (
    Attempt,
    MetricSummary,
    QualitySummary,
    Report,
    SearchSummary,
)
from planner.records.settling import DenseSettling
from planner.records.verification import Verification, target_met
from planner.tasks.base import MetricResult
from planner.version import __version__
from profilers import LatencyTable


def attempt(planned_for: float, plan: Plan, verification: Verification, name: str = "pruned") -> Attempt:
    """One applied plan: planned-for, predicted and measured (paired) speedup."""
    estimate = verification.speedup(name)
    return Attempt(planned_for, plan.predicted_speedup, estimate.value, estimate.low, estimate.high)


def metric_summary(dense: MetricResult, pruned: MetricResult) -> MetricSummary:
    return MetricSummary(dense.name, dense.value, pruned.value, dense.higher_is_better, dense.examples, dense.tokens)


def kept_lists(plan: Plan) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(query heads, neurons, KV groups) kept per layer, from a structured plan."""
    heads = tuple(int(c.kept or 0) for c in plan.units if c.kind == "attention")
    neurons = tuple(int(c.kept or 0) for c in plan.units if c.kind == "ffn")
    groups = tuple(
        int(c.groups if c.groups is not None else (c.kept or 0)) for c in plan.units if c.kind == "attention"
    )
    return heads, neurons, groups


def build_report(
    *,
    model: str,
    data: str,
    task: str,
    target_speedup: float,
    table: LatencyTable,
    plan: Plan,
    verification: Verification,
    dense_metric: MetricResult,
    pruned_metric: MetricResult,
    search: SearchSummary | None,
    attempts: Sequence[Attempt],
    stage_seconds: Mapping[str, float],
    config: Mapping[str, str],
    quality_limit: QualityLimit,
    headroom: Headroom | None = None,
    settling: DenseSettling | None = None,
    recovery: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    planned_speedup: float | None = None,
    guard: GuardCheck | None = None,
) -> Report:
    """The run's ``Report``: the promise (target, prediction, quality limit) next to the measurement.

    ``guard``: the delivered model's loss on the guard split; the quality half is met only when the test
    set's loss is within the limit and (with a guard split) the upper end of the guard loss's interval is.
    """
    dense, pruned = verification["dense"], verification["pruned"]
    estimate = verification.speedup("pruned")
    loss = quality_limit.loss(dense_metric.value, pruned_metric.value)
    within = quality_limit.within(dense_metric.value, pruned_metric.value)
    limited = any(a.guard_high is not None and a.guard_high > quality_limit.value + 1e-9 for a in attempts)
    quality = QualitySummary(
        quality_limit.kind,
        quality_limit.value,
        float(loss),
        within and (guard is None or guard.within),
        quality_limit.explicit,
        guard_loss=None if guard is None else guard.loss,
        guard_low=None if guard is None else guard.low,
        guard_high=None if guard is None else guard.high,
        guard_examples=None if guard is None else guard.examples,
        guard_within=None if guard is None else guard.within,
        speedup_within=None if guard is None or not limited else bool(guard.within and estimate.low > 1.0),
    )
    speed_met = target_met(estimate.value, target_speedup)
    heads, neurons, groups = kept_lists(plan)
    meta = table.meta
    return Report(
        model=model,
        data=data,
        task=task,
        target_speedup=float(target_speedup),
        predicted_speedup=plan.predicted_speedup,
        measured_speedup=estimate.value,
        speedup_low=estimate.low,
        speedup_high=estimate.high,
        target_met=speed_met,
        predicted_ms=plan.predicted_ms,
        dense_predicted_ms=table.predict_ms([0] * len(table.units())),
        table_dense_ms=meta.dense_ms,
        dense_ms=dense.median_ms,
        dense_p10_ms=dense.p10_ms,
        dense_p90_ms=dense.p90_ms,
        pruned_ms=pruned.median_ms,
        pruned_p10_ms=pruned.p10_ms,
        pruned_p90_ms=pruned.p90_ms,
        verify_rounds=verification.rounds,
        metric=metric_summary(dense_metric, pruned_metric),
        stage_seconds={k: round(float(v), 2) for k, v in stage_seconds.items()},
        backend=plan.backend,
        solver=plan.solver,
        runtime=meta.runtime,
        device=meta.device,
        device_name=meta.device_name,
        dtype=meta.dtype,
        batch_size=meta.batch_size,
        seq_len=meta.seq_len,
        phase=meta.phase,
        generate_tokens=meta.generate_tokens,
        threads=meta.threads,
        search=search,
        attempts=tuple(attempts),
        planned_speedup=attempts[-1].planned_for if planned_speedup is None else planned_speedup,
        heads_kept=heads,
        neurons_kept=neurons,
        groups_kept=groups,
        config=dict(config),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        planner_version=__version__,
        execution=verification.execution,
        quality=quality,
        verdict=verdict(speed_met=speed_met, quality_met=quality.met),
        headroom=None if headroom is None else headroom.as_dict(),
        dense_settling=None if settling is None else settling.as_dict(),
        recovery=None if recovery is None else dict(recovery),
        notes=tuple(notes),
    )
