"""Magnitude pruning: no data needed.

Scores use every weight a unit owns, as Torch-Pruning's group L2 magnitude does (each unit's errors
in [0, 1]):
- a head: the squared L2 norm of its query, key and value rows and its output-projection columns;
  with grouped-query attention a key/value group's rows are shared by its query heads, so each head
  gets an equal share of them (a kept group's mass grows with the heads it keeps);
- a neuron: the squared L2 norm of its up-projection rows (gate and up for gated MLPs) and its
  down-projection column;
- error of a structured level = removed squared mass / the unit's total;
- weight sparsity (generic Linear/Conv2d): per-layer magnitude masks (unstructured: smallest |w|;
  2:4: the 2 largest of every 4), error = removed weight^2 / total weight^2;
- output channels: rows kept by norm, error = removed row norm^2 / total;
- apply (transformers): physical shrinking, optionally with FLAP's bias compensation (``compensate``;
  then the backend needs calibration data for the channel means).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.backends.base import best_keep, level_errors, plan_keep
from planner.backends.compensation import compensated_shrink
from planner.errors import PlannerError
from planner.models.generic import weight_mask
from planner.models.units import Level, Unit
from planner.records.error_table import ErrorTable
from planner.records.plan import Plan
from planner.tasks.base import Task
from profilers.sparse_kernels import CSRLinear


def input_column_energy(module: nn.Module) -> torch.Tensor:
    """Squared norm of each input feature's weights, (in,) (Linear columns; GPT-2 Conv1D rows)."""
    weight = module.get_parameter("weight").detach().double()
    return weight.pow(2).sum(dim=0) if isinstance(module, nn.Linear) else weight.pow(2).sum(dim=1)


def output_row_energy(module: nn.Module) -> torch.Tensor:
    """Squared norm of each output feature's weights, (out,) (Linear rows; GPT-2 Conv1D columns)."""
    weight = module.get_parameter("weight").detach().double()
    return weight.pow(2).sum(dim=1) if isinstance(module, nn.Linear) else weight.pow(2).sum(dim=0)


def _per_block(energy: torch.Tensor, blocks: int) -> torch.Tensor:
    return energy.reshape(blocks, -1).sum(dim=1)


def head_scores(adapter: Any, unit: Unit) -> np.ndarray:
    """(H,) squared L2 mass of each query head's weights (Q, K, V rows and W_O columns)."""
    modules = dict(adapter.model.named_modules())
    heads, groups = unit.size, unit.groups or unit.size
    mass = _per_block(input_column_energy(modules[unit.modules["output"]]), heads)
    if "qkv" in unit.modules:  # GPT-2: one Conv1D holds the q, k and v columns
        q, k, v = output_row_energy(modules[unit.modules["qkv"]]).chunk(3)
        return (mass + _per_block(q, heads) + _per_block(k, heads) + _per_block(v, heads)).numpy()
    mass = mass + _per_block(output_row_energy(modules[unit.modules["query"]]), heads)
    shared = sum(_per_block(output_row_energy(modules[unit.modules[r]]), groups) for r in ("key", "value"))
    per_head = torch.as_tensor(shared).repeat_interleave(heads // groups) / (heads // groups)
    return (mass + per_head).numpy()


def neuron_scores(adapter: Any, unit: Unit) -> np.ndarray:
    """(N,) squared L2 mass of each neuron's weights (up / gate rows and the down column)."""
    modules = dict(adapter.model.named_modules())
    mass = input_column_energy(modules[unit.modules["down"]])
    for role in ("up", "gate"):
        if role in unit.modules:
            mass = mass + output_row_energy(modules[unit.modules[role]])
    return mass.numpy()


def mass_share(total: float) -> Callable[[np.ndarray], float]:
    """removed masses -> their share of ``total``."""

    def share(removed: np.ndarray) -> float:
        return float(removed.sum()) / total

    return share


def removed_share(scores: np.ndarray, kept_per_level: list[int]) -> np.ndarray:
    """Per level: squared score mass of the removed (least important) units over the total."""
    squares = np.sort(np.asarray(scores, dtype=np.float64) ** 2)
    total = squares.sum() or 1.0
    prefix = np.concatenate([[0.0], np.cumsum(squares)])
    return np.array([prefix[squares.size - k] / total for k in kept_per_level])


class MagnitudeBackend:
    """Magnitude pruning for transformer heads/neurons and generic weight sparsity."""

    name = "magnitude"

    def __init__(self, *, compensate: bool = False, progress: bool = False) -> None:
        self.progress = progress  # scoring and shrinking take well under a second: no bar needed
        self.compensate = compensate

    @property
    def needs_task(self) -> bool:
        """Only the compensation's channel means need data."""
        return self.compensate

    def score(self, adapter: Any, task: Task | None = None) -> ErrorTable:
        units = adapter.units()
        errors = []
        importance: dict[str, np.ndarray] = {}
        modules = dict(adapter.model.named_modules())
        for unit in units:
            if unit.kind in ("attention", "ffn"):
                scores = head_scores(adapter, unit) if unit.kind == "attention" else neuron_scores(adapter, unit)
                importance[unit.name] = scores
                errors.append(level_errors(scores, unit, mass_share(float(scores.sum()) or 1.0)))
            else:
                weight = modules[unit.name].weight.detach()
                total = float(weight.double().pow(2).sum()) or 1.0
                rows = weight.reshape(weight.shape[0], -1).double().pow(2).sum(dim=1).numpy()
                importance[unit.name] = rows
                unit_errors = []
                for level in unit.levels:
                    if level.structure == "dense":
                        unit_errors.append(0.0)
                    elif level.structure == "channels":
                        unit_errors.append(float(removed_share(np.sqrt(rows), [int(level.kept or 0)])[0]))
                    else:
                        mask = weight_mask(weight, level)
                        unit_errors.append(float(weight[~mask].double().pow(2).sum()) / total)
                errors.append(np.asarray(unit_errors))
        method = "magnitude: removed share of the group L2 mass (all weights a head / neuron owns)"
        return ErrorTable(tuple(u.name for u in units), tuple(errors), importance, method)

    def select(self, scores: ErrorTable, unit: Unit, level: Level) -> tuple[int, ...]:
        return best_keep(scores.importance[unit.name], unit, level)

    def apply(self, adapter: Any, plan: Plan, task: Task | None = None) -> nn.Module:
        if getattr(adapter, "supports_shrinking", False):
            if not self.compensate:
                return adapter.shrink(plan_keep(plan))
            if task is None:
                raise PlannerError("bias compensation needs calibration data (a task) for the channel means.")
            return compensated_shrink(adapter, plan_keep(plan), task)
        return apply_weight_sparsity(adapter, plan)


def apply_weight_sparsity(adapter: Any, plan: Plan) -> nn.Module:
    """Generic models: magnitude masks per layer; CSR kernels where the table measured them faster."""
    model = copy.deepcopy(adapter.model)
    modules = dict(model.named_modules())
    units = {u.name: u for u in adapter.units()}
    for choice in plan.units:
        if choice.structure == "dense":
            continue
        if choice.structure == "channels":
            raise PlannerError(
                f"unit {choice.unit}: output-channel levels of generic models change the next layer's input and "
                "cannot be applied here; export the plan to Torch-Pruning (`planner export --to torch-pruning`)."
            )
        module = modules[choice.unit]
        level = units[choice.unit].levels[choice.level]
        with torch.no_grad():
            module.weight.mul_(weight_mask(module.weight, level).to(module.weight.dtype))
        if choice.impl == "csr" and isinstance(module, nn.Linear):
            parent_name, _, child = choice.unit.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, child, CSRLinear(module.weight, module.bias))
    return model.eval()
