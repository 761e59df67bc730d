"""The search over per-unit levels (whole models evaluated on calibration data) and the final pick."""

from planner.search.loss import CandidateLoss
from planner.search.runner import Recipe, SearchOutcome, search_levels, split_examples
from planner.search.selection import Contender, Selection, select_plan

__all__ = [
    "CandidateLoss",
    "Contender",
    "Recipe",
    "SearchOutcome",
    "Selection",
    "search_levels",
    "select_plan",
    "split_examples",
]
