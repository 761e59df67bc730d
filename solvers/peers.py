"""The allocations practitioners use instead of a planner, on the same cost table, so that a sweep
can compare them at equal measured speed.

- ``solve_depth`` (ShortGPT): remove whole layers, least influential first, until the plan fits.
- ``solve_threshold`` (FLAP): one global threshold over standardised per-element scores; each unit
  keeps the elements scoring at or above it, rounded up to the unit's nearest level.

Neither minimises an error: the depth order and the threshold are the methods' own rules; the budget
only says how far to go. Both return a ``Solution`` whose ``error`` is what the rule removed (the
influence of the removed layers; the scores of the removed elements).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers._validation import BUDGET_SLACK_MS, FloatArrays, as_cost_arrays, check_budget
from solvers.result import InfeasibleBudgetError, Solution


def _cost(costs: FloatArrays, levels: Sequence[int]) -> float:
    return float(sum(c[k] for c, k in zip(costs, levels, strict=True)))


def solve_depth(
    costs_ms: Sequence[ArrayLike],
    layer_of_unit: Sequence[int],
    removed_level: Sequence[int],
    influence: ArrayLike,
    budget_ms: float,
) -> Solution:
    """Remove whole layers in order of increasing ``influence`` until the plan costs <= ``budget_ms``.

    Args:
        costs_ms: per unit, level latencies (ms), level 0 dense.
        layer_of_unit: the layer of each unit (0 .. L-1).
        removed_level: per unit, the level index that removes it entirely (0 kept).
        influence: (L,) Block Influence of each layer (ties: the earlier layer goes first).
        budget_ms: latency budget (ms), > 0.

    Returns:
        Every unit of a removed layer at its ``removed_level``, every other unit dense; the fewest
        layers that fit. ``error`` is the removed layers' summed influence.

    Raises:
        InfeasibleBudgetError: removing every layer still does not fit.
        ValueError: mismatched lengths or layer indices out of range.
    """
    costs = as_cost_arrays(costs_ms)
    budget = check_budget(budget_ms)
    scores = np.asarray(influence, dtype=np.float64).reshape(-1)
    if len(layer_of_unit) != len(costs) or len(removed_level) != len(costs):
        raise ValueError(f"layer_of_unit and removed_level need one entry per unit ({len(costs)} units).")
    if any(not 0 <= layer < scores.size for layer in layer_of_unit):
        raise ValueError(f"layer_of_unit must index the {scores.size} layers of 'influence'.")
    if any(not 0 <= k < c.size for k, c in zip(removed_level, costs, strict=True)):
        raise ValueError("removed_level must be a valid level index of each unit.")
    order = np.argsort(scores, kind="stable")
    levels = [0] * len(costs)
    removed = 0
    while _cost(costs, levels) > budget + BUDGET_SLACK_MS:
        if removed == scores.size:
            raise InfeasibleBudgetError(
                f"No depth plan fits the budget of {budget:.4g} ms: without any layer it costs "
                f"{_cost(costs, levels):.4g} ms.",
                budget_ms=budget,
                min_cost_ms=_cost(costs, levels),
            )
        layer = int(order[removed])
        levels = [removed_level[i] if layer_of_unit[i] == layer else k for i, k in enumerate(levels)]
        removed += 1
    error = float(scores[order[:removed]].sum())
    return Solution(levels=tuple(levels), cost_ms=_cost(costs, levels), error=error, solver="depth")


def threshold_levels(
    scores: Sequence[NDArray[np.float64]], kept_per_level: Sequence[NDArray[np.int64]], threshold: float
) -> list[int]:
    """Per unit, the level keeping the fewest elements that still keeps every element scoring at or
    above ``threshold`` (a unit's levels need not be sorted; level 0 keeps all)."""
    out = []
    for values, kept in zip(scores, kept_per_level, strict=True):
        needed = int(np.count_nonzero(values >= threshold))
        fits = np.flatnonzero(kept >= needed)
        out.append(int(fits[np.argmin(kept[fits])]))
    return out


def solve_threshold(
    costs_ms: Sequence[ArrayLike],
    scores: Sequence[ArrayLike],
    kept_per_level: Sequence[ArrayLike],
    budget_ms: float,
) -> Solution:
    """The lowest global threshold over ``scores`` whose plan (``threshold_levels``) fits the budget.

    Args:
        costs_ms: per unit, level latencies (ms).
        scores: per unit, one (standardised) score per prunable element (a KV group, a neuron).
        kept_per_level: per unit, elements each level keeps (same length as the unit's costs; the
            largest equals the unit's element count).
        budget_ms: latency budget (ms), > 0.

    Returns:
        The plan of the lowest threshold that fits; ``error`` is the sum of the removed scores.

    Raises:
        InfeasibleBudgetError: even the plan that removes everything it can does not fit.
        ValueError: mismatched lengths.
    """
    costs = as_cost_arrays(costs_ms)
    budget = check_budget(budget_ms)
    values = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    kept = [np.asarray(k, dtype=np.int64).reshape(-1) for k in kept_per_level]
    if len(values) != len(costs) or len(kept) != len(costs):
        raise ValueError(f"scores and kept_per_level need one entry per unit ({len(costs)} units).")
    for i, (c, v, k) in enumerate(zip(costs, values, kept, strict=True)):
        if k.size != c.size or int(k.max()) != v.size or not np.all(np.isfinite(v)):
            raise ValueError(
                f"unit {i}: kept_per_level needs one count per level (the largest = its {v.size} finite scores)."
            )
    candidates = np.unique(np.concatenate([*values, [np.inf]]))

    def plan(threshold: float) -> list[int]:
        return threshold_levels(values, kept, threshold)

    if _cost(costs, plan(np.inf)) > budget + BUDGET_SLACK_MS:
        fastest = _cost(costs, plan(np.inf))
        raise InfeasibleBudgetError(
            f"No threshold plan fits the budget of {budget:.4g} ms: the fewest elements cost {fastest:.4g} ms.",
            budget_ms=budget,
            min_cost_ms=fastest,
        )
    # Cost falls as the threshold rises (levels only lose elements): bisect for the lowest that fits.
    low, high = 0, candidates.size - 1  # candidates[high] fits
    while low < high:
        middle = (low + high) // 2
        if _cost(costs, plan(float(candidates[middle]))) <= budget + BUDGET_SLACK_MS:
            high = middle
        else:
            low = middle + 1
    levels = plan(float(candidates[high]))
    error = 0.0
    for v, k, level in zip(values, kept, levels, strict=True):
        error += float(np.sort(v)[: v.size - int(k[level])].sum())
    return Solution(levels=tuple(levels), cost_ms=_cost(costs, levels), error=error, solver="threshold")
