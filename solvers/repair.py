"""Bring a level vector to a latency budget with the table, changing as little as the error guide allows.

``repair_levels`` is what keeps an evolutionary search's offspring feasible by construction, and what
re-plans a searched allocation for another budget: first, while the predicted cost exceeds the
budget, take the move (one unit to any cheaper level) that adds the least guide error per millisecond
saved; then, while slack remains, take the move (one unit to any level with a lower guide error that
still fits) that removes the most guide error per millisecond spent. Units in ``frozen`` (the ones a
mutation just changed) are moved only when no other unit can help, so the repair does not undo the
mutation. Latency need not be monotone in the level.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from solvers._validation import BUDGET_SLACK_MS as _SLACK
from solvers._validation import FloatArrays
from solvers.result import InfeasibleBudgetError


def plan_cost(costs: FloatArrays, levels: Sequence[int]) -> float:
    """Predicted latency (ms) of ``levels``: the sum of the chosen level costs."""
    return float(sum(c[k] for c, k in zip(costs, levels, strict=True)))


def _cheapening_move(
    costs: FloatArrays, errors: FloatArrays, levels: list[int], units: Sequence[int]
) -> tuple[int, int] | None:
    """(unit, level) of the least guide error added per ms saved among ``units``; None if none saves time."""
    best, move = np.inf, None
    for unit in units:
        c, e, now = costs[unit], errors[unit], levels[unit]
        saved = c[now] - c
        cheaper = np.flatnonzero(saved > 0)
        if cheaper.size == 0:
            continue
        ratio = (e[cheaper] - e[now]) / saved[cheaper]
        pick = int(np.argmin(ratio))
        if ratio[pick] < best:
            best, move = float(ratio[pick]), (unit, int(cheaper[pick]))
    return move


def _spending_move(
    costs: FloatArrays, errors: FloatArrays, levels: list[int], units: Sequence[int], slack: float
) -> tuple[int, int] | None:
    """(unit, level) removing the most guide error per ms spent within ``slack``; None if nothing helps."""
    best, move = 0.0, None
    for unit in units:
        c, e, now = costs[unit], errors[unit], levels[unit]
        gain = e[now] - e
        spent = c - c[now]
        ok = np.flatnonzero((gain > 0) & (spent <= slack + _SLACK))
        if ok.size == 0:
            continue
        # A move that gains and saves time is always taken first.
        ratio = np.where(spent[ok] <= 0, np.inf, gain[ok] / np.maximum(spent[ok], 1e-30))
        pick = int(np.argmax(ratio))
        if ratio[pick] > best:
            best, move = float(ratio[pick]), (unit, int(ok[pick]))
    return move


def repair_levels(
    costs: FloatArrays,
    errors: FloatArrays,
    budget_ms: float,
    levels: Sequence[int],
    *,
    frozen: Collection[int] = (),
    spend_slack: bool = True,
) -> tuple[int, ...]:
    """``levels`` moved to fit ``budget_ms`` (see the module docstring).

    Args:
        costs: per unit, float64 level latencies (ms), validated.
        errors: per unit, float64 guide errors (lower is better), validated, same shapes.
        budget_ms: the latency budget of the searched units (ms).
        levels: one level index per unit (may exceed the budget).
        frozen: units moved last (only when no other unit can restore feasibility), never to spend slack.
        spend_slack: after fitting, move units to lower-error levels while they still fit.

    Returns:
        Level indices whose predicted cost is <= ``budget_ms``.

    Raises:
        InfeasibleBudgetError: if even every unit at its fastest level exceeds the budget.
    """
    current = [int(k) for k in levels]
    free = [u for u in range(len(costs)) if u not in frozen]
    every = list(range(len(costs)))
    cost = plan_cost(costs, current)
    while cost > budget_ms + _SLACK:
        move = _cheapening_move(costs, errors, current, free) or _cheapening_move(costs, errors, current, every)
        if move is None:
            fastest = float(sum(c.min() for c in costs))
            raise InfeasibleBudgetError(
                f"No plan fits the budget of {budget_ms:.4g} ms: the fastest plan costs {fastest:.4g} ms.",
                budget_ms=budget_ms,
                min_cost_ms=fastest,
            )
        unit, level = move
        cost += float(costs[unit][level] - costs[unit][current[unit]])
        current[unit] = level
    while spend_slack:
        move = _spending_move(costs, errors, current, free, budget_ms - cost)
        if move is None:
            break
        unit, level = move
        cost += float(costs[unit][level] - costs[unit][current[unit]])
        current[unit] = level
    return tuple(current)
