"""Keeping the promise, both halves: re-plan toward the target speed, and toward lighter plans when the
quality is lost.

A table predicts; verification measures (a paired speedup with its 95% interval). One rule says whether
a measurement is "short", "met" or "overshoots" (``planner.records.verification.speed_status``), the same
one the verdict and the report use. An interval that straddles a boundary of that rule is first
narrowed by more rounds (``remeasure``, at most ``MAX_REMEASURES`` times); then the point estimate
decides:
- short -> plan for more speed; overshoots -> plan for less (overshooting costs quality for nothing);
- each new planned-for speedup comes from a secant step through the last two (planned-for, measured)
  points of quiet measurements (the first step scales by target / measured), bounded to a factor
  ``MAX_STEP`` per step, within (1, the table's maximum].

Quality comes first: every attempt is checked on the guard split (``planner.stages.verify.check_quality``;
the limit is ``--max-loss`` or the default guard), and an attempt is within the limit only when the
upper end of its loss's 95% interval is. An attempt beyond it is re-planned lighter, between it and the
fastest plan known to be within the limit (or the dense model, 1x, which loses nothing): where the line
through the two plans' upper ends reaches ``QUALITY_AIM`` of the limit (``lighter_target``; loss grows
faster than linearly with the speedup, so the line errs on the light side), at least ``MIN_LIGHTER``
of the way; when none is within the limit and one correction is left, the lightest plan worth making
(``LIGHTEST_SPEEDUP``, also the lightest step ever taken). A heavier step never goes past half-way to a
plan that lost too much. A re-plan that gives a plan already measured (the pick has nothing between
the two speeds) is not measured again: the step goes on in its direction by as much again. A
measurement taken while other processes kept the machine busy (``Verification.busy``) moves no plan
in either direction and never enters the secant.

The plan kept is, among those within the limit, the least compressed one that met the target, else the
fastest; when none is within the limit, the least lossy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from planner.records.plan import Plan
from planner.records.quality import GuardCheck
from planner.records.report import Attempt
from planner.records.verification import Verification, speed_status, target_met, undecided
from planner.report.build import attempt

MAX_STEP = 1.3
"""One speed correction changes the planned-for speedup by at most this factor."""
MAX_REMEASURES = 2
"""Extra verifications (each of the run's verify rounds) of one attempt whose interval straddles a boundary."""
LIGHTEST_SPEEDUP = 1.05
"""The lightest plan worth making: the last resort when every plan tried lost more than the limit."""
MAX_REPEATED_PLANS = 3
"""Re-plans of one correction that may give a plan already measured before the correction gives up
(each such re-plan costs a solve, not a measurement)."""
QUALITY_AIM = 0.9
"""A lighter step aims its loss's upper end at this share of the limit (a margin for the guard's noise)."""
MIN_LIGHTER = 0.05
"""A lighter step moves at least this share of the way from the lossy plan toward the lighter one."""


@dataclass(frozen=True)
class Applied:
    """A plan, the pruned model it gave, that model's verification against the dense one, and its loss on
    the guard split (None: there is no guard split to check it on)."""

    plan: Plan
    model: nn.Module
    verification: Verification
    guard: GuardCheck | None = None
    recipe: str | None = None
    """How the backend applied the plan, when it chose among recipes (``planner.stages.apply.choose``)."""

    @property
    def admissible(self) -> bool:
        """Within the quality limit: the upper end of the guard loss's interval is (True without a guard)."""
        return self.guard is None or self.guard.within

    @property
    def busy(self) -> bool:
        return self.verification.busy


def record(planned_for: float, applied: Applied, target: float) -> Attempt:
    """The report's record of one attempt: speeds, the rule's status, busy, and the guard loss."""
    base = attempt(planned_for, applied.plan, applied.verification)
    guard = applied.guard
    return Attempt(
        base.planned_for,
        base.predicted_speedup,
        base.measured_speedup,
        base.measured_low,
        base.measured_high,
        status=speed_status(base.measured_speedup, target),
        busy=applied.busy,
        guard_loss=None if guard is None else guard.loss,
        guard_low=None if guard is None else guard.low,
        guard_high=None if guard is None else guard.high,
        recipe=applied.recipe,
    )


def next_target(points: list[tuple[float, float]], target: float) -> float:
    """The next planned-for speedup from (planned-for, measured) points, aiming measured at ``target``.

    The secant through the last two points is used only where measured speed rose with planned speed;
    otherwise (or with one point) the last planned-for value is scaled by target / measured.
    """
    planned, measured = points[-1]
    guess = planned * target / measured
    if len(points) >= 2:
        (p0, m0), (p1, m1) = points[-2], points[-1]
        if (m1 - m0) * (p1 - p0) > 1e-12:
            secant = p1 + (target - m1) * (p1 - p0) / (m1 - m0)
            if secant > 1.0:
                guess = secant
    return min(max(guess, planned / MAX_STEP), planned * MAX_STEP)


def choose(attempts: list[Attempt], applied: list[Applied], target: float) -> int:
    """Index of the attempt kept: among those within the quality limit, the least compressed one that
    met the target, else the fastest; when none is within the limit, the least lossy."""
    within = [i for i in range(len(attempts)) if applied[i].admissible]
    if not within:

        def lossy(i: int) -> tuple[float, float]:
            guard = applied[i].guard
            return (guard.high if guard is not None else 0.0, attempts[i].planned_for)

        return min(range(len(attempts)), key=lossy)
    met = [i for i in within if target_met(attempts[i].measured_speedup, target)]
    if met:
        return min(met, key=lambda i: (attempts[i].planned_for, -attempts[i].measured_speedup))
    return max(within, key=lambda i: attempts[i].measured_speedup)


def settle(
    applied: Applied,
    target: float,
    remeasure: Callable[[Applied], Applied] | None,
    log: Callable[[str], None],
) -> Applied:
    """Measure ``applied`` again (up to ``MAX_REMEASURES`` times) while its speedup's interval straddles a
    boundary of the speed rule; a busy measurement is not extended (it moves nothing anyway)."""
    if remeasure is None:
        return applied
    for _ in range(MAX_REMEASURES):
        estimate = applied.verification.speedup("pruned")
        if applied.busy or not undecided(estimate.low, estimate.high, target):
            break
        log(
            f"      measured {estimate.value:.2f}x [{estimate.low:.2f}-{estimate.high:.2f}] straddles the "
            f"{target:g}x rule's boundary: measuring more rounds"
        )
        applied = remeasure(applied)
    return applied


def correct(
    first: Applied,
    *,
    target_speedup: float,
    max_speedup: float,
    corrections: int,
    replan: Callable[[float], Applied],
    remeasure: Callable[[Applied], Applied] | None = None,
    describe_loss: Callable[[GuardCheck], str] = lambda g: f"{g.loss:.3g}",
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Applied, list[Attempt]]:
    """Re-plan (``replan(planned_for) -> Applied``) while the measurement or the quality says so.

    Args:
        remeasure: ``applied -> applied`` with more verification rounds (None: never).
        describe_loss: a guard check as text for the log (e.g. "2.10 points [1.2, 3.0]").

    Returns:
        (the attempt kept, every attempt in order).
    """
    applied = [settle(first, target_speedup, remeasure, log)]
    attempts = [record(target_speedup, applied[0], target_speedup)]
    for done in range(corrections):
        last, current = attempts[-1], applied[-1]
        measured = f"measured {last.measured_speedup:.2f}x [{last.measured_low:.2f}-{last.measured_high:.2f}]"
        quiet = [(a.planned_for, a.measured_speedup) for a, ap in zip(attempts, applied, strict=True) if not ap.busy]
        within = [a.planned_for for a, ap in zip(attempts, applied, strict=True) if ap.admissible]
        lossy = [a.planned_for for a, ap in zip(attempts, applied, strict=True) if not ap.admissible]
        status = speed_status(last.measured_speedup, target_speedup)
        lightest = LIGHTEST_SPEEDUP
        if not current.admissible:
            assert current.guard is not None
            why = f"lost {describe_loss(current.guard)}, beyond the limit"
            lighter = [
                (a.planned_for, 0.0 if ap.guard is None else ap.guard.high)
                for a, ap in zip(attempts, applied, strict=True)
                if ap.admissible and a.planned_for < last.planned_for
            ]
            floor, floor_high = max(lighter, default=(1.0, 0.0))  # the dense model loses nothing
            planned = lighter_target(floor, floor_high, last.planned_for, current.guard)
            if not within and done == corrections - 1:
                planned = LIGHTEST_SPEEDUP
            planned = min(max(planned, LIGHTEST_SPEEDUP), last.planned_for)  # lighter, but worth making
            lightest = max(floor, LIGHTEST_SPEEDUP)  # a repeated plan steps on, but not past a plan within
        elif current.busy:
            log(
                f"      {measured} ({status}), but other processes kept the machine busy while it was measured: "
                "no plan is moved on the strength of that measurement"
            )
            break
        elif status == "met":
            break
        else:
            why = f"{measured} {'is short' if status == 'short' else 'overshoots'}"
            planned = next_target(quiet or [(last.planned_for, last.measured_speedup)], target_speedup)
            if status == "short" and lossy and planned > last.planned_for:
                planned = min(planned, (last.planned_for + min(lossy)) / 2)  # never past a plan that lost too much
                if planned - last.planned_for < 1e-3:
                    log(
                        f"      {measured} is short, and a heavier plan (planned for {min(lossy):.2f}x) lost more "
                        "quality than the limit allows: no heavier plan is tried"
                    )
                    break
        found = _new_plan(
            min(planned, max_speedup),
            last.planned_for,
            attempts=attempts,
            applied=applied,
            replan=replan,
            bounds=(lightest, min([max_speedup, *lossy])),
            intro=f"{why} (target {target_speedup:g}x)",
            log=log,
        )
        if found is None:
            break
        planned, fresh = found
        current = settle(fresh, target_speedup, remeasure, log)
        applied.append(current)
        attempts.append(record(planned, current, target_speedup))
    kept = choose(attempts, applied, target_speedup)
    if kept != len(attempts) - 1:
        log(f"      keeping the attempt planned for {attempts[kept].planned_for:.2f}x")
    return applied[kept], attempts


def _new_plan(
    planned: float,
    previous: float,
    *,
    attempts: Sequence[Attempt],
    applied: Sequence[Applied],
    replan: Callable[[float], Applied],
    bounds: tuple[float, float],
    intro: str,
    log: Callable[[str], None],
) -> tuple[float, Applied] | None:
    """``(planned-for speedup, attempt)`` of the next plan not measured yet, or None when none is left.

    A re-plan for ``planned`` that gives a plan already measured (``replan`` returns an attempt whose
    plan equals an earlier one, without applying or timing it again) steps on in the same direction
    from ``previous`` (the last attempt's planned-for speedup), by the same step again, within
    ``bounds`` (lightest, heaviest), at most ``MAX_REPEATED_PLANS`` times."""
    lightest, heaviest = bounds
    for repeats in range(MAX_REPEATED_PLANS + 1):
        if planned <= 1.0 or any(abs(planned - a.planned_for) < 1e-3 for a in attempts):
            log(f"      {intro}, but no new plan is left to try (next would be {planned:.2f}x)")
            return None
        if repeats == 0:
            log(f"      {intro}: re-planning for {planned:.2f}x and measuring again")
        candidate = replan(planned)
        same = next((a for a, ap in zip(attempts, applied, strict=True) if ap.plan == candidate.plan), None)
        if same is None:
            return planned, candidate
        if planned < previous:
            further = max(2 * planned - previous, lightest)
        else:  # never past half-way to the heaviest plan worth trying
            further = min(2 * planned - previous, (planned + heaviest) / 2)
        already = f"the plan for {planned:.2f}x is the one already measured (planned for {same.planned_for:.2f}x)"
        if (
            abs(further - planned) < 1e-3
            or (further - planned) * (planned - previous) < 0
            or repeats == MAX_REPEATED_PLANS
        ):
            log(f"      {already}, and no further step is left")
            return None
        log(f"      {already}: stepping on to {further:.2f}x")
        previous, planned = planned, further
    return None


def lighter_target(floor: float, floor_high: float, planned_for: float, guard: GuardCheck) -> float:
    """The planned-for speedup of a lighter step from a plan that lost too much (``guard``, planned for
    ``planned_for``) toward ``floor`` (a plan within the limit whose loss's upper end was
    ``floor_high``; 1.0 and 0 for the dense model): where the line through the two upper ends reaches
    ``QUALITY_AIM`` x the limit, between ``MIN_LIGHTER`` of the way and ``floor``; half-way when the
    two losses give no line (the lighter one lost as much)."""
    span = planned_for - floor
    if guard.high <= floor_high:
        return floor + span / 2
    share = (QUALITY_AIM * guard.limit - floor_high) / (guard.high - floor_high)
    return floor + span * min(max(share, 0.0), 1.0 - MIN_LIGHTER)


LAUNCH_BOUND_SHARE = 0.25
"""A table is launch-bound when cutting a block to half its width saves less than this share of
what removing the block saves (median over units): in a compute-bound regime half width saves about
half. On an H100 in eager mode it saved 0-15% (``../shared/reference/gpu.md``)."""


def launch_bound(unit_costs: Sequence[np.ndarray]) -> bool:
    """True when only removing whole blocks saves time (see ``LAUNCH_BOUND_SHARE``).

    Args:
        unit_costs: per unit, the latency of each level (ms), dense first and the fewest kept last.
    """
    shares = []
    for costs in unit_costs:
        c = np.asarray(costs, dtype=np.float64)
        if c.size < 3 or c[0] - c[-1] <= 0:
            continue
        shares.append(max(0.0, c[0] - c[c.size // 2]) / (c[0] - c[-1]))
    return bool(shares) and float(np.median(shares)) < LAUNCH_BOUND_SHARE


def obstacle(*, launch_bound_table: bool, device: str, execution: str, limited: bool = True) -> str:
    """What stands between the target and the quality, and what the user can change (``limited``: the
    run had a ``--max-loss`` and tried lighter plans; otherwise only the guard looked afterwards)."""
    if launch_bound_table and device == "cuda" and execution == "eager":
        return "launch-bound: only whole blocks save time at this shape; use --execution cuda-graphs or a larger batch"
    if launch_bound_table:
        return "launch-bound: only whole blocks save time at this shape; use a larger batch or sequence length"
    if limited:
        return "the quality limit: every faster plan tried lost more; allow more loss or ask for less speed"
    return (
        "this much pruning costs this model that much at this shape; recover it (--recover-seconds), ask for less "
        "speed, or set --max-loss to get the fastest plan within a limit"
    )
