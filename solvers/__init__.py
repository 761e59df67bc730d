"""Solvers: choose one level per unit that meets a latency budget with the least estimated error.

Pure numpy/scipy; works on arrays (one cost and one error array per unit), never on models.
"""

from solvers.baselines import solve_greedy, solve_milp, solve_uniform
from solvers.dp import DEFAULT_BUCKETS, BucketedProblem, bucketize, solve_dp
from solvers.error_models import normalised_curves, scaled_errors, spdy_prior
from solvers.local_search import Candidate, SearchResult, SearchStep, local_search
from solvers.registry import SOLVERS, get_solver, solve
from solvers.result import InfeasibleBudgetError, Solution

__all__ = [
    "DEFAULT_BUCKETS",
    "SOLVERS",
    "BucketedProblem",
    "Candidate",
    "InfeasibleBudgetError",
    "SearchResult",
    "SearchStep",
    "Solution",
    "bucketize",
    "get_solver",
    "local_search",
    "normalised_curves",
    "scaled_errors",
    "solve",
    "solve_dp",
    "solve_greedy",
    "solve_milp",
    "solve_uniform",
    "spdy_prior",
]
