"""Baseline solvers with the DP's interface, for honest comparisons in reports.

- ``solve_uniform``: the same compression fraction everywhere, the least one that fits the budget.
- ``solve_greedy``: repeatedly take the cheapest step in error per millisecond saved.
- ``solve_milp``: exact multiple-choice knapsack on continuous costs (scipy's HiGHS), a cross-check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from solvers._validation import BUDGET_SLACK_MS as _BUDGET_SLACK
from solvers._validation import FloatArrays, as_unit_arrays, check_budget
from solvers.result import InfeasibleBudgetError, Solution


def _solution(costs: FloatArrays, errors: FloatArrays, levels: Sequence[int], solver: str) -> Solution:
    picked = tuple(int(k) for k in levels)
    return Solution(
        levels=picked,
        cost_ms=float(sum(c[k] for c, k in zip(costs, picked, strict=True))),
        error=float(sum(e[k] for e, k in zip(errors, picked, strict=True))),
        solver=solver,
    )


def _infeasible(costs: FloatArrays, budget: float, solver: str, why: str) -> InfeasibleBudgetError:
    fastest = float(sum(c.min() for c in costs))
    return InfeasibleBudgetError(
        f"{solver}: no plan fits the budget of {budget:.4g} ms ({why}; the fastest plan costs {fastest:.4g} ms).",
        budget_ms=budget,
        min_cost_ms=fastest,
    )


def solve_uniform(
    costs_ms: Sequence[ArrayLike],
    errors: Sequence[ArrayLike],
    budget_ms: float,
    *,
    fractions: Sequence[ArrayLike] | None = None,
) -> Solution:
    """Same compression fraction for every unit: the smallest fraction whose plan fits the budget.

    Args:
        fractions: per unit and level, how compressed the level is in [0, 1] (0 = dense), e.g. the
            fraction of heads removed. Default: level rank / (n - 1). For a global fraction f each
            unit takes its least compressed level with fraction >= f (its most compressed if none).
            Costs need not be monotone, so every candidate f is checked in ascending order.
    """
    costs, errs = as_unit_arrays(costs_ms, errors)
    budget = check_budget(budget_ms)
    if fractions is None:
        fracs = [np.arange(c.size) / max(c.size - 1, 1) for c in costs]
    else:
        fracs, _ = as_unit_arrays(fractions, errs)
    for f in np.unique(np.concatenate(fracs)):
        levels = []
        for unit_fracs in fracs:
            ok = np.flatnonzero(unit_fracs >= f - 1e-12)
            if ok.size == 0:
                levels.append(int(np.argmax(unit_fracs)))
            else:
                levels.append(int(ok[np.argmin(unit_fracs[ok])]))
        cost = sum(c[k] for c, k in zip(costs, levels, strict=True))
        if cost <= budget + _BUDGET_SLACK:
            return _solution(costs, errs, levels, "uniform")
    raise _infeasible(costs, budget, "uniform", "no single compression fraction fits")


def solve_greedy(costs_ms: Sequence[ArrayLike], errors: Sequence[ArrayLike], budget_ms: float) -> Solution:
    """Start every unit at its least-error level, then repeatedly move the one unit whose move to a
    cheaper level adds the least error per millisecond saved, until the plan fits the budget."""
    costs, errs = as_unit_arrays(costs_ms, errors)
    budget = check_budget(budget_ms)
    levels = [int(np.argmin(e)) for e in errs]
    total = float(sum(c[k] for c, k in zip(costs, levels, strict=True)))
    while total > budget + _BUDGET_SLACK:
        best_ratio, best_move = np.inf, None
        for unit, (c, e) in enumerate(zip(costs, errs, strict=True)):
            saved = c[levels[unit]] - c
            cheaper = np.flatnonzero(saved > 0)
            if cheaper.size == 0:
                continue
            ratio = (e[cheaper] - e[levels[unit]]) / saved[cheaper]
            pick = int(np.argmin(ratio))
            if ratio[pick] < best_ratio:
                best_ratio, best_move = float(ratio[pick]), (unit, int(cheaper[pick]))
        if best_move is None:
            raise _infeasible(costs, budget, "greedy", "no unit has a cheaper level left")
        unit, level = best_move
        total -= costs[unit][levels[unit]] - costs[unit][level]
        levels[unit] = level
    return _solution(costs, errs, levels, "greedy")


def solve_milp(
    costs_ms: Sequence[ArrayLike],
    errors: Sequence[ArrayLike],
    budget_ms: float,
    *,
    time_limit_s: float | None = None,
) -> Solution:
    """Exact multiple-choice knapsack with binary x[l, k] on continuous costs (HiGHS via scipy)."""
    costs, errs = as_unit_arrays(costs_ms, errors)
    budget = check_budget(budget_ms)
    sizes = [c.size for c in costs]
    n = int(sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rows = np.repeat(np.arange(len(sizes)), sizes)
    one_per_unit = csr_array((np.ones(n), (rows, np.arange(n))), shape=(len(sizes), n))
    cost_row = np.concatenate(costs)[None, :]
    constraints = [
        LinearConstraint(one_per_unit, lb=1.0, ub=1.0),
        LinearConstraint(cost_row, lb=-np.inf, ub=budget),
    ]
    options = {} if time_limit_s is None else {"time_limit": float(time_limit_s)}
    result = milp(
        c=np.concatenate(errs),
        constraints=constraints,
        integrality=np.ones(n),
        bounds=Bounds(0.0, 1.0),
        options=options,
    )
    if result.x is None:
        raise _infeasible(costs, budget, "milp", f"HiGHS: {result.message}")
    x: NDArray[np.float64] = result.x
    levels = [int(np.argmax(x[offsets[i] : offsets[i + 1]])) for i in range(len(sizes))]
    return _solution(costs, errs, levels, "milp")
