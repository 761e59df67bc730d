"""SPDY's dynamic program for the multiple-choice knapsack over per-unit levels.

minimise sum_l e[l][k_l]  subject to  sum_l t[l][k_l] <= budget_ms

How costs are discretised (this is where the reference lost accuracy or broke its guarantee):
- every unit's fastest level is paid up front: the DP distributes only the remaining budget
  ``budget - sum_l min_k t[l][k]`` over ``buckets`` buckets, so buckets are as fine as possible;
- the extra cost of each level over its unit's fastest is rounded UP to buckets, so the predicted
  (continuous) cost of the answer never exceeds the budget;
- an optional refinement spends the slack that rounding left (best one- or two-unit moves that lower
  the error and still fit the continuous budget), closing most of the gap to the exact optimum.
Latency need not be monotone in the level; nothing here assumes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers._validation import BUDGET_SLACK_MS, FloatArrays, as_unit_arrays, check_buckets, check_budget
from solvers.result import InfeasibleBudgetError, Solution

DEFAULT_BUCKETS = 10_000


@dataclass(frozen=True)
class BucketedProblem:
    """The integer problem the DP solves exactly.

    Attributes:
        bucket_costs: per unit, extra buckets of each level over the unit's fastest level (>= 0;
            ``buckets + 1`` marks a level that can never fit).
        buckets: the number of buckets available, B.
        base_ms: sum of every unit's fastest-level cost, paid up front (ms).
        width_ms: bucket width (ms); 0 when the budget equals ``base_ms`` exactly.
    """

    bucket_costs: tuple[NDArray[np.int64], ...]
    buckets: int
    base_ms: float
    width_ms: float


def bucketize(costs_ms: Sequence[NDArray[np.float64]], budget_ms: float, buckets: int) -> BucketedProblem:
    """Discretise validated costs for the DP (see the module docstring for the rounding rule)."""
    minima = [float(c.min()) for c in costs_ms]
    base = float(sum(minima))
    if base > budget_ms + BUDGET_SLACK_MS:
        raise InfeasibleBudgetError(
            f"No plan fits the budget of {budget_ms:.4g} ms: the fastest plan costs {base:.4g} ms.",
            budget_ms=budget_ms,
            min_cost_ms=base,
        )
    width = max(budget_ms - base, 0.0) / buckets
    out = []
    for c, low in zip(costs_ms, minima, strict=True):
        extra = c - low
        # A zero width (budget == fastest plan) leaves room for no extra cost at all.
        counts = np.minimum(np.ceil(extra / width), buckets + 1) if width > 0 else np.where(extra > 0, buckets + 1, 0)
        out.append(counts.astype(np.int64))
    return BucketedProblem(tuple(out), buckets, base, width)


def _pareto_levels(counts: NDArray[np.int64], errors: NDArray[np.float64], limit: int) -> NDArray[np.int64]:
    """Indices of the levels worth keeping: within ``limit`` buckets and not dominated by a level
    that is no more expensive with a lower error (ties: the lower index survives)."""
    order = np.lexsort((np.arange(counts.size), errors, counts))
    keep = []
    best = np.inf
    for i in order:
        if counts[i] <= limit and errors[i] < best:
            keep.append(i)
            best = errors[i]
    return np.asarray(keep, dtype=np.int64)


def _refine(costs: FloatArrays, errors: FloatArrays, budget: float, levels: list[int]) -> list[int]:
    """Spend the slack left by rounding: repeatedly apply the best move of one or two units (each to
    any of its levels) that lowers the total error and keeps the continuous cost within ``budget``.

    All (unit, level) moves are sorted by cost change dc; a move a's best partner is the least error
    change among moves with dc <= slack - dc_a (a prefix minimum). Pairs within one unit are not
    plans and are skipped. "Staying" is a move too (dc = de = 0), so single-unit moves are included.
    Each iteration is O(M log M) for M = total levels; it stops when no move helps.
    """
    unit_of = np.concatenate([np.full(c.size, i) for i, c in enumerate(costs)])
    level_of = np.concatenate([np.arange(c.size) for c in costs])
    offsets = np.concatenate([[0], np.cumsum([c.size for c in costs])[:-1]])
    all_costs, all_errors = np.concatenate(costs), np.concatenate(errors)
    tolerance = 1e-12 * max(1.0, float(np.abs(all_errors).max()))
    current = np.asarray(levels, dtype=np.int64)
    for _ in range(4 * len(costs) + 10):
        picked = offsets + current
        slack = budget - float(all_costs[picked].sum())
        cost_change = all_costs - all_costs[picked][unit_of]
        order = np.argsort(cost_change, kind="stable")
        dc = cost_change[order]
        de = (all_errors - all_errors[picked][unit_of])[order]
        units = unit_of[order]
        prefix_best = np.minimum.accumulate(de)
        prefix_arg = np.maximum.accumulate(np.where(de == prefix_best, np.arange(de.size), 0))
        end = np.searchsorted(dc, slack - dc, side="right") - 1
        fits = end >= 0
        end = np.where(fits, end, 0)
        partner = prefix_arg[end]
        total = np.where(fits & (units[partner] != units), de + prefix_best[end], np.inf)
        a = int(np.argmin(total))
        if not total[a] < -tolerance:
            break
        b = int(partner[a])
        current[units[a]] = level_of[order[a]]
        current[units[b]] = level_of[order[b]]
    return [int(k) for k in current]


def solve_dp(
    costs_ms: Sequence[ArrayLike],
    errors: Sequence[ArrayLike],
    budget_ms: float,
    *,
    buckets: int = DEFAULT_BUCKETS,
    refine: bool = True,
) -> Solution:
    """Pick one level per unit with the least total error whose total cost fits ``budget_ms``.

    Args:
        costs_ms: per unit, a 1-D array of level latencies (ms); units may differ in level count.
        errors: per unit, a 1-D array of level errors (same lengths as ``costs_ms``).
        budget_ms: latency budget for the searched units (ms), > 0.
        buckets: number of budget buckets B; time O(L * K * B), memory O(L * B).
        refine: spend the slack left by rounding up (never worse, never over budget). With
            ``refine=False`` the answer is exactly optimal for ``bucketize``'s integer problem.

    Returns:
        A ``Solution`` whose ``cost_ms`` never exceeds ``budget_ms``; among equal errors the DP
        takes the cheapest.

    Raises:
        InfeasibleBudgetError: if even the fastest level of every unit exceeds the budget.
        ValueError: on malformed input (NaN/inf/negative costs, mismatched lengths, empty units).
    """
    costs, errs = as_unit_arrays(costs_ms, errors)
    budget = check_budget(budget_ms)
    problem = bucketize(costs, budget, check_buckets(buckets))
    size = problem.buckets + 1

    # float32 tables halve memory traffic; backtracking recomputes the same float32 sums exactly.
    kept = [_pareto_levels(k, e, problem.buckets) for k, e in zip(problem.bucket_costs, errs, strict=True)]
    # Positive scaling leaves the argmin unchanged and keeps float32 sums far from overflow.
    scale = float(sum(np.abs(e).max() for e in errs)) or 1.0
    rows = np.empty((len(costs) + 1, size), dtype=np.float32)
    rows[0] = np.inf
    rows[0, 0] = 0.0
    scratch = np.empty(size, dtype=np.float32)
    reach = 0  # highest bucket index with a finite entry so far
    for unit, levels in enumerate(kept):
        prev, new = rows[unit], rows[unit + 1]
        new.fill(np.inf)
        counts = problem.bucket_costs[unit][levels]
        unit_errors = (errs[unit][levels] / scale).astype(np.float32)
        for shift, err in zip(counts.tolist(), unit_errors, strict=True):
            stop = min(size, reach + shift + 1)
            span = stop - shift
            if span > 0:
                np.add(prev[:span], err, out=scratch[:span])
                np.minimum(new[shift:stop], scratch[:span], out=new[shift:stop])
        reach = min(size - 1, reach + int(counts.max()))

    used = int(np.argmin(rows[-1]))  # first minimum: the cheapest among equal errors
    chosen = [0] * len(costs)
    for unit in range(len(costs) - 1, -1, -1):
        levels = kept[unit]
        counts = problem.bucket_costs[unit][levels]
        unit_errors = (errs[unit][levels] / scale).astype(np.float32)
        target = rows[unit + 1, used]
        for shift, err, level in zip(counts.tolist(), unit_errors, levels.tolist(), strict=True):
            if shift <= used and rows[unit, used - shift] + err == target:
                chosen[unit] = level
                used -= shift
                break
        else:  # pragma: no cover - the forward pass guarantees a match
            raise RuntimeError(f"DP backtrack found no level for unit {unit}; please report this bug.")

    if refine:
        chosen = _refine(costs, errs, max(budget, problem.base_ms), chosen)
    cost = float(sum(c[k] for c, k in zip(costs, chosen, strict=True)))
    error = float(sum(e[k] for e, k in zip(errs, chosen, strict=True)))
    return Solution(levels=tuple(chosen), cost_ms=cost, error=error, solver="dp")
