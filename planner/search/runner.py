"""The search stage: per-unit levels chosen by evaluating whole shrunk models, then a final pick on
calibration examples the search never scored.

The search (SPDY's local search over per-unit error weights; every candidate comes out of the DP,
so it meets the budget by construction) scores candidates on the first ``examples`` calibration
examples. Its best few plans and the uniform allocation for the same budget are then re-ranked on
the remaining calibration examples (``selection``); the lowest loss there is the plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import solvers
from planner.backends.base import Backend
from planner.config import SearchSettings
from planner.records.error_table import ErrorTable
from planner.search.loss import CandidateLoss
from planner.search.selection import Contender, Selection, select_plan
from planner.tasks.base import Task
from profilers import LatencyTable
from profilers.profiler import progress_bar


@dataclass(frozen=True)
class Recipe:
    """How a chosen plan is re-planned for another budget: the search's per-unit weights of the
    backend's errors (``coefficients``), or the uniform allocation (``coefficients`` None)."""

    coefficients: tuple[float, ...] | None

    @property
    def label(self) -> str:
        return "dp+search" if self.coefficients is not None else "dp+search:uniform"

    def levels(self, table: LatencyTable, scores: ErrorTable, budget_ms: float, units: Any) -> list[int]:
        """Levels for ``budget_ms`` following this recipe."""
        costs = table.unit_costs()
        if self.coefficients is None:
            fractions = [u.compression() for u in units]
            return list(solvers.solve_uniform(costs, scores.unit_errors(), budget_ms, fractions=fractions).levels)
        errors = solvers.scaled_errors(self.coefficients, scores.unit_errors())
        return list(solvers.solve_dp(costs, errors, budget_ms).levels)


@dataclass(frozen=True)
class SearchOutcome:
    """What the search chose and why: its result (history), the final pick, and the recipe."""

    levels: tuple[int, ...]
    recipe: Recipe
    result: solvers.SearchResult
    selection: Selection
    method: str
    seconds: float


def split_examples(count: int, search_examples: int) -> tuple[list[int], list[int]]:
    """(search indices, selection indices) of ``count`` calibration examples: the first
    ``search_examples`` for the search, the rest for the final pick (all of them when none are left)."""
    used = min(search_examples, count)
    held_out = list(range(used, count)) or list(range(count))
    return list(range(used)), held_out


def search_levels(
    *,
    adapter: Any,
    task: Task,
    table: LatencyTable,
    scores: ErrorTable,
    backend: Backend,
    budget_ms: float,
    settings: SearchSettings,
    progress: bool = False,
) -> SearchOutcome:
    """Search levels for ``budget_ms`` (see the module docstring); ``settings.seconds`` bounds the search."""
    start = time.perf_counter()
    search_index, selection_index = split_examples(len(task.calibration), settings.examples)

    def loss_on(index: list[int]) -> CandidateLoss:
        tokens = task.calibration.subset(index)
        return CandidateLoss(
            adapter=adapter, task=task, backend=backend, scores=scores, tokens=tokens, objective=settings.objective
        )

    loss = loss_on(search_index)
    with progress_bar(round(settings.seconds), f"search ({backend.name})", unit="s", enabled=progress) as bar:
        done = [0]

        def tick(step: solvers.SearchStep) -> None:
            bar.update(max(0, int(step.seconds) - done[0]))
            done[0] = max(done[0], int(step.seconds))

        result = solvers.local_search(
            table.unit_costs(),
            budget_ms,
            loss,
            curves=scores.unit_errors(),
            seed=settings.seed,
            max_evaluations=None,
            max_seconds=settings.seconds,
            on_step=tick,
        )
    contenders = [
        Contender(f"search #{rank}", c.levels, c.coefficients, c.loss) for rank, c in enumerate(result.top, start=1)
    ]
    units = adapter.units()
    try:
        uniform = Recipe(None).levels(table, scores, budget_ms, units)
        contenders.append(Contender("uniform", tuple(uniform), None))
    except solvers.InfeasibleBudgetError:
        pass  # non-monotone costs: even the most compressed uniform plan can miss a budget the DP meets
    selection = select_plan(contenders, loss_on(selection_index), examples=len(selection_index))
    chosen = selection.chosen
    recipe = Recipe(None if chosen.coefficients is None else tuple(float(c) for c in np.asarray(chosen.coefficients)))
    return SearchOutcome(
        levels=tuple(chosen.levels),
        recipe=recipe,
        result=result,
        selection=selection,
        method=settings.method,
        seconds=time.perf_counter() - start,
    )
