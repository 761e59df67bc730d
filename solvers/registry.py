"""Solvers by name, so the pipeline and CLI can pick one with a helpful lookup error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import ArrayLike

from solvers.baselines import solve_greedy, solve_milp, solve_uniform
from solvers.dp import solve_dp
from solvers.result import Solution

SolverFn = Callable[..., Solution]
"""``solve(costs_ms, errors, budget_ms, **options) -> Solution``; never exceeds the budget."""

SOLVERS: dict[str, SolverFn] = {
    "dp": solve_dp,
    "greedy": solve_greedy,
    "uniform": solve_uniform,
    "milp": solve_milp,
}


def get_solver(name: str) -> SolverFn:
    """Return the solver registered under ``name``; unknown names list what exists."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(sorted(SOLVERS))}") from None


def solve(
    name: str,
    costs_ms: Sequence[ArrayLike],
    errors: Sequence[ArrayLike],
    budget_ms: float,
    **options: Any,
) -> Solution:
    """Run the solver ``name`` (see ``SOLVERS``) on one problem."""
    return get_solver(name)(costs_ms, errors, budget_ms, **options)
