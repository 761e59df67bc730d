"""Solvers: choose one level per unit that meets a latency budget with the least estimated error.

Pure numpy/scipy; works on arrays (one cost and one error array per unit), never on models.
"""

from solvers._validation import BUDGET_SLACK_MS
from solvers.baselines import solve_greedy, solve_milp, solve_uniform
from solvers.dp import DEFAULT_BUCKETS, BucketedProblem, bucketize, solve_dp
from solvers.error_models import normalised_curves, scaled_errors, spdy_prior
from solvers.evolution import EvolutionResult, Generation, Seed, evolutionary_search
from solvers.local_search import Candidate, SearchResult, SearchStep, local_search
from solvers.peers import solve_depth, solve_threshold, threshold_levels
from solvers.registry import SOLVERS, get_solver, solve
from solvers.repair import plan_cost, repair_levels
from solvers.result import InfeasibleBudgetError, Solution

__all__ = [
    "BUDGET_SLACK_MS",
    "DEFAULT_BUCKETS",
    "SOLVERS",
    "BucketedProblem",
    "Candidate",
    "EvolutionResult",
    "Generation",
    "InfeasibleBudgetError",
    "SearchResult",
    "SearchStep",
    "Seed",
    "Solution",
    "bucketize",
    "evolutionary_search",
    "get_solver",
    "local_search",
    "normalised_curves",
    "plan_cost",
    "repair_levels",
    "scaled_errors",
    "solve",
    "solve_depth",
    "solve_dp",
    "solve_greedy",
    "solve_milp",
    "solve_threshold",
    "solve_uniform",
    "spdy_prior",
    "threshold_levels",
]
