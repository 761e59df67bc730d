"""Keeping the promise: when the measured speedup falls short of the target, re-plan and measure again.

A table predicts; verification measures. If the measured speedup is below the target (the one
``target_met`` rule), the plan is re-made for a larger planned-for speedup (``target x target /
measured``), with the same recipe that chose it (the search's per-unit weights, the uniform
allocation, or the plain solver), applied and measured again; at most ``corrections`` times, never
asking for less speed than the last attempt, never beyond the table's maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from planner.records.plan import Plan
from planner.records.report import Attempt
from planner.records.verification import Verification, target_met
from planner.report.build import attempt


@dataclass(frozen=True)
class Applied:
    """A plan, the pruned model it gave, and that model's verification against the dense one."""

    plan: Plan
    model: nn.Module
    verification: Verification


def correct(
    first: Applied,
    *,
    target_speedup: float,
    max_speedup: float,
    corrections: int,
    replan: Callable[[float], Applied],
    met: Callable[[float, float], bool] = target_met,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Applied, list[Attempt]]:
    """Re-plan (``replan(planned_for) -> Applied``) until the promise is ``met`` or corrections run out.

    Returns:
        (the last applied plan, every attempt in order).
    """
    current = first
    attempts = [attempt(target_speedup, first.plan, first.verification)]
    for _ in range(corrections):
        measured = attempts[-1].measured_speedup
        if met(measured, target_speedup):
            break
        corrected = attempts[-1].planned_for * target_speedup / measured
        if corrected <= attempts[-1].planned_for:
            break  # only ever ask for more speed than the last plan did
        if corrected > max_speedup:
            log(f"      measured {measured:.2f}x; a corrected plan ({corrected:.2f}x) is beyond this table's maximum")
            break
        log(
            f"      measured {measured:.2f}x < {target_speedup:g}x: the table over-promised; re-planning for "
            f"{corrected:.2f}x and measuring again"
        )
        current = replan(corrected)
        attempts.append(attempt(corrected, current.plan, current.verification))
    return current, attempts
