"""FLAP (An et al., AAAI 2024): training-free adaptive structured pruning with bias compensation.

- score: for each input channel j of an attention output projection (o_proj) and an MLP down
  projection, the fluctuation metric var_j * ||W[:, j]||^2 (the sample variance of its input over the
  calibration set's real tokens times its weight column's squared norm). A query head's score is the
  sum over its channels; with grouped-query attention the prunable element is a whole KV group
  (the sum over its query heads). Scores are standardised per layer and kind (attention elements,
  MLP neurons) and kept as ``extra["z::<unit>"]``.
- the allocation (``planner.stages.solve``, solver "flap") cuts every unit at one global threshold over
  the standardised scores, each unit rounded up to its nearest level, the lowest threshold whose
  plan fits the budget: layers and modules get their own ratios.
- apply: physical shrinking keeping the best-scoring heads / neurons, then bias compensation: each
  output projection gains sum over removed channels j of W[:, j] * mean_j as a bias, so the layer's
  output keeps the removed channels' average contribution.
- ``selected``: another method's plan with each unit's heads / neurons chosen by fluctuation at the
  same level (the same counts, so the same latency). As a recipe of the Fisher backend
  (``planner.stages.apply.choose``) this is FLAP's way to apply the planner's allocation: on the
  medical reviews at 3x the planner's plan so applied scored 55.58% against 49.92% with Fisher's
  selection and tuning (FLAP's own plan: 53.92%).

Plans applied here carry biases the stock configs of some families do not declare: FLAP is a
baseline of ``planner sweep``, not a backend of ``planner apply`` (``PEER_BACKENDS``); its apply is a
recipe of the Fisher backend (the saved folder and GGUF carry the biases).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch import nn

from planner.backends.activations import dense_input_moments
from planner.backends.base import best_keep, is_grouped, level_errors, plan_keep, structured_units
from planner.backends.compensation import compensated_shrink
from planner.backends.magnitude import input_column_energy, mass_share
from planner.backends.tuning import output_projection
from planner.errors import PlannerError
from planner.models.units import Level, Unit
from planner.records.error_table import ErrorTable
from planner.records.plan import Plan
from planner.tasks.base import Task


def standardised(scores: np.ndarray) -> np.ndarray:
    """(x - mean) / std over one layer's elements of one kind (zeros when they are all equal)."""
    values = np.asarray(scores, dtype=np.float64)
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def element_scores(unit: Unit, per_head_or_neuron: np.ndarray) -> np.ndarray:
    """The prunable elements' scores: KV groups for grouped attention (sum of their query heads),
    else heads / neurons themselves."""
    if is_grouped(unit):
        return per_head_or_neuron.reshape(int(unit.groups or 0), -1).sum(axis=1)
    return per_head_or_neuron


def elements_kept(unit: Unit, level: Level) -> int:
    """Elements a level keeps; a grouped level that also drops query heads inside kept groups is not a
    FLAP level (it counts as keeping every group, so a threshold never picks it over a whole-group one)."""
    if not is_grouped(unit):
        return int(level.kept or 0)
    groups = int(unit.groups or 0)
    whole = int(level.groups or 0) * unit.heads_per_group == int(level.kept or 0)
    return int(level.groups or 0) if whole else groups


def z_key(unit: str) -> str:
    return f"z::{unit}"


def refusal(adapter: Any) -> str | None:
    """Why FLAP cannot prune this model (None: it can)."""
    units = adapter.units()
    if units and all(u.kind in ("attention", "ffn") for u in units) and hasattr(adapter, "head_output"):
        return None
    return (
        f"--methods flap scores attention heads and MLP neurons through their output projections, and "
        f"{adapter.name} has none ({units[0].kind if units else 'no'} units). Leave flap out of --methods."
    )


class FlapBackend:
    """Fluctuation scores, one global threshold, bias compensation (see the module docstring)."""

    name = "flap"
    needs_task = True
    compensate = True  # every model it applies gains biases (``planner.backends.base.recipes_of``)

    def __init__(self, *, progress: bool = False) -> None:
        self.progress = progress

    def selected(self, adapter: Any, plan: Plan, task: Task | None) -> Plan:
        """``plan`` with the kept heads / neurons of each structured unit chosen by fluctuation at the
        unit's planned level (whole layers, dense units and other structures unchanged)."""
        scores = self.score(adapter, task)
        units = {u.name: u for u in structured_units(adapter)}
        choices = []
        for choice in plan.units:
            unit = units.get(choice.unit)
            if unit is not None and choice.structure in ("heads", "neurons") and choice.keep is not None:
                keep = self.select(scores, unit, unit.levels[choice.level])
                if len(keep) == len(choice.keep):
                    choice = dataclasses.replace(choice, keep=keep)
            choices.append(choice)
        return dataclasses.replace(plan, units=tuple(choices))

    def score(self, adapter: Any, task: Task | None) -> ErrorTable:
        if task is None:
            raise PlannerError("FLAP scores need calibration data (a task).")
        why = refusal(adapter)
        if why is not None:
            raise PlannerError(why)
        units = structured_units(adapter)
        outputs = [output_projection(adapter, u) for u in units]
        moments = dense_input_moments(task, adapter.model, outputs)
        importance, extra, errors = {}, {}, []
        for unit, module, stats in zip(units, outputs, moments, strict=True):
            channel = stats.variance * input_column_energy(module).numpy()  # (in,)
            per = channel.reshape(unit.size, -1).sum(axis=1)  # (H,) per query head or (N,) per neuron
            importance[unit.name] = per
            extra[z_key(unit.name)] = standardised(element_scores(unit, per))
            errors.append(level_errors(per, unit, mass_share(float(per.sum()) or 1.0)))
        method = "flap: fluctuation (input variance x squared weight column), standardised per layer and kind"
        return ErrorTable(tuple(u.name for u in units), tuple(errors), importance, method, extra=extra)

    def select(self, scores: ErrorTable, unit: Unit, level: Level) -> tuple[int, ...]:
        return best_keep(scores.importance[unit.name], unit, level)

    def apply(self, adapter: Any, plan: Plan, task: Task | None = None) -> nn.Module:
        """Shrink, with the removed channels' mean contribution added to each output projection's bias
        (the means: one pass over the task's calibration data)."""
        if task is None:
            raise PlannerError("FLAP's bias compensation needs calibration data (a task).")
        return compensated_shrink(adapter, plan_keep(plan), task)
