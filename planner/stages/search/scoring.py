"""How the search builds the candidates it scores: the ways the apply stage's recipes fill a plan's units.

The apply stage applies the final plan with each of the backend's recipes and keeps the model closest to
the dense one (``planner.stages.apply.choose``). A search that scores every candidate as a plainly
shrunk model (the backend's heads / neurons, no tuning, no compensation) ranks plans by a model no
recipe ships: at SmolLM2 decode 3x the searched plan scored 7.44 nats of KL against uniform's 10.29
that way, and 4.47 against 4.13 as the sweep applied both (FLAP's choice of units, compensated), so
the planner lost to uniform on the test set (``benchmarks/RESULTS.md``, 2026-12-07).

A *scoring* is one way a recipe fills units that can be built per candidate without fitting anything:
which heads / neurons a level keeps (a backend's ``select`` over its scores, cached per unit and level)
and whether the output projections gain FLAP's bias compensation (the dense model's mean input of the
removed channels, as ``planner.backends.compensation``). Recipes that fit (mask tuning) are scored by
the units they start from, uncompensated: their fit costs a calibration pass per candidate. The
backend's own scoring comes first; a backend without recipes has that one only.

How the search uses them (``planner.stages.search.runner``): the seeds (the plain DP plan, uniform)
are scored under each scoring and the search runs under the one that scored lowest; the final pick
scores every contender under each and keeps each contender's best, as the apply will.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.backends.base import Backend, recipes_of
from planner.backends.compensation import output_means
from planner.records.error_table import ErrorTable
from planner.tasks.base import Task

COMPENSATED = " + compensation"
"""Suffix of the scorings that add the removed channels' mean contribution as biases."""


@dataclass(frozen=True)
class Scoring:
    """One way to fill a candidate's units.

    Attributes:
        name: "<selector> [+ compensation]", e.g. "fisher", "flap + compensation".
        selector: the backend whose ``select(scores, unit, level)`` picks the kept heads / neurons.
        scores: the selector's error table.
        means: unit name -> (in,) the dense model's mean input of the unit's output projection over
            the calibration set's real tokens, for bias compensation; None: no compensation.
    """

    name: str
    selector: Backend
    scores: ErrorTable
    means: Mapping[str, np.ndarray] | None = None


def scoring_name(selector: Backend, compensate: bool) -> str:
    return selector.name.lower() + (COMPENSATED if compensate else "")


def _wanted(adapter: Any, backend: Backend) -> dict[str, tuple[Backend, bool]]:
    """scoring name -> (selector, compensated), one per distinct way the backend's recipes fill units."""
    wanted: dict[str, tuple[Backend, bool]] = {}
    for recipe in recipes_of(backend, adapter).values():
        selector = recipe if getattr(recipe, "selected", None) is not None else backend
        compensate = bool(getattr(recipe, "compensate", False))
        wanted.setdefault(scoring_name(selector, compensate), (selector, compensate))
    return wanted


def scoring_names(adapter: Any, backend: Backend) -> tuple[str, ...]:
    """The names ``scorings_for`` gives, in its order, without computing any scores (for a driver whose
    candidates are scored by workers)."""
    return tuple(_wanted(adapter, backend))


def scorings_for(adapter: Any, task: Task, backend: Backend, scores: ErrorTable) -> dict[str, Scoring]:
    """The backend's scorings for ``adapter``'s model, its own first (see the module docstring).

    A recipe that re-chooses the units (``selected``, FLAP's apply) selects with its own scores (one
    calibration pass, shared with the compensation means through ``dense_input_moments``); the others
    select with ``scores``.
    """
    wanted = _wanted(adapter, backend)
    means = output_means(adapter, task) if any(c for _, c in wanted.values()) else None
    found: dict[str, Scoring] = {}
    for name, (selector, compensate) in wanted.items():
        table = scores if selector is backend else selector.score(adapter, task)
        found[name] = Scoring(name, selector, table, means if compensate else None)
    return found
