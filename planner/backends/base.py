"""The pruning-backend interface: score units (an error table for the solver), choose which
heads/neurons to keep, and apply a plan for real.

Call order: ``score(adapter, task)`` once -> ``ErrorTable``; ``select(scores, unit, level)`` for
every chosen structured level (which heads / neurons to keep, recorded in the plan); later, possibly
on another machine, ``apply(adapter, plan, task)`` -> a physically shrunk (or sparsified) copy.
Whether a backend needs the task's data follows from the backend (``needs_task``), never from
comparing names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from torch import nn

from planner.errors import PlannerError
from planner.models.units import Level, Unit
from planner.records.error_table import ErrorTable
from planner.records.plan import Plan
from planner.tasks.base import Task


class Backend(Protocol):
    """A pruning method. See the module docstring for the call order."""

    name: str

    @property
    def needs_task(self) -> bool:
        """True when ``score`` / ``apply`` need the task's calibration data (and its loss)."""
        ...

    def score(self, adapter: Any, task: Task | None) -> ErrorTable:
        """Error table for every unit and level of ``adapter.units()``."""
        ...

    def select(self, scores: ErrorTable, unit: Unit, level: Level) -> tuple[int, ...]:
        """Which heads (query heads) / neurons a structured unit keeps at ``level`` (sorted)."""
        ...

    def apply(self, adapter: Any, plan: Plan, task: Task | None) -> nn.Module:
        """A pruned copy of the adapter's model following ``plan`` (the original is untouched)."""
        ...


def top_k(importance: np.ndarray, kept: int) -> tuple[int, ...]:
    """Indices of the ``kept`` most important units, sorted ascending (ties: lower index first)."""
    order = np.argsort(-np.asarray(importance, dtype=np.float64), kind="stable")
    return tuple(sorted(int(i) for i in order[:kept]))


def grouped_keep(importance: np.ndarray, unit: Unit, level: Level) -> tuple[int, ...]:
    """Grouped-query attention: the ``q`` most important query heads in every group, then the ``g``
    groups whose kept heads are most important (``importance`` is per query head, (H,))."""
    q_total = unit.heads_per_group
    groups = level.groups or 0
    if groups == 0:
        return ()
    per_group = int(level.kept or 0) // groups
    scores = np.asarray(importance, dtype=np.float64).reshape(-1, q_total)
    best = [top_k(row, per_group) for row in scores]
    mass = np.array([scores[g, list(keep)].sum() for g, keep in enumerate(best)])
    chosen = top_k(mass, groups)
    return tuple(g * q_total + h for g in chosen for h in best[g])


def best_keep(importance: np.ndarray, unit: Unit, level: Level) -> tuple[int, ...]:
    """The most important heads / neurons a level can keep (whole KV groups for grouped attention)."""
    if unit.kind == "attention" and unit.groups not in (None, unit.size):
        return grouped_keep(importance, unit, level)
    return top_k(importance, int(level.kept or 0))


def level_errors(importance: np.ndarray, unit: Unit, removed_cost: Callable[[np.ndarray], float]) -> np.ndarray:
    """(n_levels,) error of each level: ``removed_cost(importance of the units it removes)`` when it
    keeps the most important ones its structure allows (``best_keep``)."""
    values = np.asarray(importance, dtype=np.float64)
    errors = []
    for level in unit.levels:
        keep = set(best_keep(values, unit, level))
        removed = np.array([values[i] for i in range(values.size) if i not in keep])
        errors.append(removed_cost(removed))
    return np.asarray(errors, dtype=np.float64)


def is_grouped(unit: Unit) -> bool:
    """True for an attention unit with grouped-query attention (fewer KV groups than query heads)."""
    return unit.kind == "attention" and unit.groups not in (None, unit.size)


def plan_keep(plan: Plan) -> dict[str, Sequence[int]]:
    """unit name -> kept heads / neurons, from a structured plan's ``keep`` lists (dense units left out)."""
    keep: dict[str, Sequence[int]] = {}
    for choice in plan.units:
        if choice.structure == "dense":
            continue
        if choice.keep is None:
            raise PlannerError(f"plan unit {choice.unit} has no 'keep' list; re-create the plan with `planner plan`.")
        keep[choice.unit] = choice.keep
    return keep


def structured_units(adapter: Any) -> list[Unit]:
    """The adapter's attention and FFN units (the ones heads / neurons are selected in)."""
    return [u for u in adapter.units() if u.kind in ("attention", "ffn")]


def recipes_of(backend: Backend, adapter: Any) -> dict[str, Backend]:
    """The backend's recipes for this model, the default first (``{name: backend}`` when it offers none).

    Every recipe's model can be deployed where the dense one runs: the biases compensation gives
    output projections are saved with the folder and written to GGUF (``planner.models.gguf_writer``).
    The apply stage keeps the recipe closest to the dense model (``planner.stages.apply.choose``); the
    search scores candidates the ways the recipes fill units (``planner.stages.search.scoring``).
    """
    offer = getattr(backend, "recipes", None)
    if offer is None:
        return {backend.name: backend}
    return dict(offer(adapter))
