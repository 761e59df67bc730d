"""The records a solver returns and the error it raises when a budget cannot be met."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Solution:
    """One chosen level per unit.

    Attributes:
        levels: chosen level index per unit (index into that unit's cost/error arrays).
        cost_ms: predicted latency of the searched units, the sum of the chosen costs (ms).
        error: total estimated loss, the sum of the chosen errors.
        solver: name of the solver that produced it.
    """

    levels: tuple[int, ...]
    cost_ms: float
    error: float
    solver: str


class InfeasibleBudgetError(ValueError):
    """No choice of levels fits the budget.

    Attributes:
        budget_ms: the budget that was asked for (searched units only).
        min_cost_ms: the cost of the fastest choice (every unit at its fastest level).
        target_speedup / max_speedup: set when the budget came from a speedup target.
    """

    def __init__(
        self,
        message: str,
        *,
        budget_ms: float,
        min_cost_ms: float,
        target_speedup: float | None = None,
        max_speedup: float | None = None,
    ) -> None:
        super().__init__(message)
        self.budget_ms = budget_ms
        self.min_cost_ms = min_cost_ms
        self.target_speedup = target_speedup
        self.max_speedup = max_speedup
