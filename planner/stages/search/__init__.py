"""The search over per-unit levels (whole models evaluated on calibration data) and the final pick."""

from planner.stages.search.builder import CandidateBuilder
from planner.stages.search.loss import CandidateLoss, LossClock
from planner.stages.search.runner import (
    Recipe,
    SearchOutcome,
    check_search,
    sample_sizes,
    search_levels,
    split_examples,
)
from planner.stages.search.selection import Contender, Selection, select_plan

__all__ = [
    "CandidateBuilder",
    "CandidateLoss",
    "Contender",
    "LossClock",
    "Recipe",
    "SearchOutcome",
    "Selection",
    "check_search",
    "sample_sizes",
    "search_levels",
    "select_plan",
    "split_examples",
]
