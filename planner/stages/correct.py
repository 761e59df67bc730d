"""Keeping the promise without paying for more speed than asked: re-plan toward the target.

A table predicts; verification measures (a paired speedup with its 95% interval). The plan is
re-made only when the measurement says so with confidence:
- too slow: the whole interval lies below the target -> plan for more speed;
- too fast: the whole interval lies above ``OVERSHOOT`` x target -> plan for less (overshooting costs
  accuracy for nothing).
Each new planned-for speedup comes from a secant step through the last two (planned-for, measured)
points (the first step scales by target / measured), bounded to a factor ``MAX_STEP`` per step,
within (1, the table's maximum]. At most ``corrections`` steps. The plan kept is the one with the
smallest planned-for speedup among those measured at or above the target within tolerance
(``target_met``); when none is, the fastest measured.

Quality comes first (``--max-loss``, ``planner.config.quality``): a plan that lost more than allowed on
held-out calibration examples is re-planned for less speed (1.3x lower, or half-way to the fastest
plan known to be within the limit), a heavier step never goes past half-way to a plan that lost too
much (a bisection between the two), and the plan kept is chosen among those within the limit (the
least lossy when none is). A speedup measured while other processes kept the
machine busy (``Verification.busy``) does not represent the machine: it never makes a heavier plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from planner.records.plan import Plan
from planner.records.report import Attempt
from planner.records.verification import Verification, target_met
from planner.report.build import attempt

OVERSHOOT = 1.05
"""A measured speedup whose whole interval is above this multiple of the target is re-planned lower."""
MAX_STEP = 1.3
"""One correction changes the planned-for speedup by at most this factor."""


@dataclass(frozen=True)
class Applied:
    """A plan, the pruned model it gave, and that model's verification against the dense one."""

    plan: Plan
    model: nn.Module
    verification: Verification
    quality_loss: float | None = None
    """Loss on held-out calibration examples in the ``--max-loss`` unit (None: no limit was set)."""
    admissible: bool = True
    """False when ``quality_loss`` is beyond ``--max-loss``."""


def next_target(points: list[tuple[float, float]], target: float) -> float:
    """The next planned-for speedup from (planned-for, measured) points, aiming measured at ``target``."""
    planned, measured = points[-1]
    guess = planned * target / measured
    if len(points) >= 2:
        (p0, m0), (p1, m1) = points[-2], points[-1]
        if abs(m1 - m0) > 1e-9 and abs(p1 - p0) > 1e-9:
            secant = p1 + (target - m1) * (p1 - p0) / (m1 - m0)
            if secant > 1.0:
                guess = secant
    return min(max(guess, planned / MAX_STEP), planned * MAX_STEP)


def choose(attempts: list[Attempt], applied: list[Applied], target: float) -> int:
    """Index of the attempt kept: among those within the quality limit, the least compressed one that
    met the target, else the fastest; when none is within the limit, the least lossy."""
    within = [i for i in range(len(attempts)) if applied[i].admissible]
    if not within:
        return min(range(len(attempts)), key=lambda i: (applied[i].quality_loss or 0.0, attempts[i].planned_for))
    met = [i for i in within if target_met(attempts[i].measured_speedup, target)]
    if met:
        return min(met, key=lambda i: (attempts[i].planned_for, -attempts[i].measured_speedup))
    return max(within, key=lambda i: attempts[i].measured_speedup)


def correct(
    first: Applied,
    *,
    target_speedup: float,
    max_speedup: float,
    corrections: int,
    replan: Callable[[float], Applied],
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Applied, list[Attempt]]:
    """Re-plan (``replan(planned_for) -> Applied``) while the measurement is confidently off target.

    Returns:
        (the attempt kept, every attempt in order).
    """
    applied = [first]
    attempts = [attempt(target_speedup, first.plan, first.verification)]
    for _ in range(corrections):
        last, current = attempts[-1], applied[-1]
        measured = f"measured {last.measured_speedup:.2f}x [{last.measured_low:.2f}-{last.measured_high:.2f}]"
        points = [(a.planned_for, a.measured_speedup) for a in attempts]
        within = [a.planned_for for a, ap in zip(attempts, applied, strict=True) if ap.admissible]
        lossy = [a.planned_for for a, ap in zip(attempts, applied, strict=True) if not ap.admissible]
        if not current.admissible:
            why = "lost more quality than --max-loss allows"
            below = [p for p in within if p < last.planned_for]
            # Bisect toward the fastest plan within the limit once one is known.
            planned = (max(below) + last.planned_for) / 2 if below else last.planned_for / MAX_STEP
        elif last.measured_high < target_speedup and current.verification.busy:
            log(
                f"      {measured} is short, but other processes kept the machine busy while it was measured: "
                "no heavier plan on the strength of that measurement"
            )
            break
        elif last.measured_high < target_speedup:
            why = f"{measured} is short"
            planned = next_target(points, target_speedup)
        elif last.measured_low > OVERSHOOT * target_speedup:
            why = f"{measured} overshoots"
            planned = next_target(points, target_speedup)
        else:
            break
        planned = min(planned, max_speedup)
        if lossy and planned > last.planned_for:  # heavier, but not past (or onto) a plan that lost too much
            planned = min(planned, (last.planned_for + min(lossy)) / 2)
        if why.endswith("is short") and planned <= last.planned_for:
            break  # a heavier plan would lose more quality than allowed
        if planned <= 1.0 or any(abs(planned - a.planned_for) < 1e-3 for a in attempts):
            break  # nowhere new to go
        log(f"      {why} of {target_speedup:g}x: re-planning for {planned:.2f}x and measuring again")
        current = replan(planned)
        applied.append(current)
        attempts.append(attempt(planned, current.plan, current.verification))
    kept = choose(attempts, applied, target_speedup)
    if kept != len(attempts) - 1:
        log(f"      keeping the attempt planned for {attempts[kept].planned_for:.2f}x")
    return applied[kept], attempts


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
