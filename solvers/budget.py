"""Turning a speedup target into a latency budget for the searched units, and back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from solvers._validation import as_unit_arrays
from solvers.result import InfeasibleBudgetError


def _check_speedup(speedup: float) -> float:
    value = float(speedup)
    if not np.isfinite(value) or value <= 1.0:
        raise ValueError(f"The 'speedup' parameter must be > 1.0. Got {speedup!r} instead.")
    return value


def budget_for_speedup(*, dense_ms: float, searched_dense_ms: float, speedup: float) -> float:
    """Latency budget (ms) left to the searched units for a speedup target.

    ``budget = dense / X - (dense - searched_dense)``: everything that is not searched (embeddings,
    norms, layers kept dense) is a fixed part that still runs after pruning.

    Args:
        dense_ms: measured end-to-end latency of the dense model (ms).
        searched_dense_ms: sum of the searched units' dense-level latencies (ms).
        speedup: target speedup X > 1.

    Returns:
        The budget in ms; may be <= 0, which means no plan can reach X (see ``check_reachable``).
    """
    x = _check_speedup(speedup)
    if not np.isfinite(dense_ms) or dense_ms <= 0:
        raise ValueError(f"The 'dense_ms' parameter must be > 0. Got {dense_ms!r} instead.")
    if not np.isfinite(searched_dense_ms) or searched_dense_ms < 0:
        raise ValueError(f"The 'searched_dense_ms' parameter must be >= 0. Got {searched_dense_ms!r} instead.")
    fixed_ms = dense_ms - searched_dense_ms
    return dense_ms / x - fixed_ms


def max_speedup(*, dense_ms: float, searched_dense_ms: float, costs_ms: Sequence[ArrayLike]) -> float:
    """Largest reachable speedup: ``dense / (fixed + sum of each unit's fastest level)``."""
    costs, _ = as_unit_arrays(costs_ms, [np.zeros(len(np.atleast_1d(c))) for c in costs_ms])
    fastest = float(sum(c.min() for c in costs))
    fixed_ms = dense_ms - searched_dense_ms
    total = fixed_ms + fastest
    return float("inf") if total <= 0 else dense_ms / total


def check_reachable(
    *, dense_ms: float, searched_dense_ms: float, speedup: float, costs_ms: Sequence[ArrayLike]
) -> float:
    """Return the budget for ``speedup``, or raise ``InfeasibleBudgetError`` saying the best reachable.

    The message reads like "2.0x is not reachable; the fastest plan gives 1.74x".
    """
    budget = budget_for_speedup(dense_ms=dense_ms, searched_dense_ms=searched_dense_ms, speedup=speedup)
    costs, _ = as_unit_arrays(costs_ms, [np.zeros(len(np.atleast_1d(c))) for c in costs_ms])
    fastest = float(sum(c.min() for c in costs))
    if fastest > budget:
        best = max_speedup(dense_ms=dense_ms, searched_dense_ms=searched_dense_ms, costs_ms=costs)
        raise InfeasibleBudgetError(
            f"{speedup:g}x is not reachable; the fastest plan gives {best:.2f}x. "
            f"Ask for at most {best:.2f}x, or add lower levels / more units to the search.",
            budget_ms=budget,
            min_cost_ms=fastest,
            target_speedup=float(speedup),
            max_speedup=best,
        )
    return budget
