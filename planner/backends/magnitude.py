"""Magnitude pruning: no data needed.

Scores (documented proxies, each unit's errors in [0, 1]):
- heads: ``||W_O[:, h*d:(h+1)*d]||_F`` (the head's output-projection columns);
- neurons: ``||W1[i, :]|| * ||W2[:, i]||``;
- error of a structured level = removed score^2 / total score^2 of that unit;
- weight sparsity (generic Linear/Conv2d): per-layer magnitude masks (unstructured: smallest |w|;
  2:4: the 2 largest of every 4), error = removed weight^2 / total weight^2;
- output channels: rows kept by norm, error = removed row norm^2 / total.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.backends.base import Calibration, ErrorTable, structured_keep, top_k
from planner.errors import PlannerError
from planner.models.generic import weight_mask
from planner.plan import Plan
from profilers.sparse_kernels import CSRLinear


def head_scores(attention: Any) -> np.ndarray:
    """(H,) Frobenius norm of each head's block of output-projection columns."""
    size = attention.self.attention_head_size
    w = attention.output.dense.weight.detach()
    heads = w.shape[1] // size
    return w.reshape(w.shape[0], heads, size).pow(2).sum(dim=(0, 2)).sqrt().double().numpy()


def neuron_scores(layer: Any) -> np.ndarray:
    """(N,) ``||W1 row|| * ||W2 column||`` per FFN neuron."""
    w1 = layer.intermediate.dense.weight.detach()
    w2 = layer.output.dense.weight.detach()
    return (w1.norm(dim=1) * w2.norm(dim=0)).double().numpy()


def removed_share(scores: np.ndarray, kept_per_level: list[int]) -> np.ndarray:
    """Per level: squared score mass of the removed (least important) units over the total."""
    squares = np.sort(np.asarray(scores, dtype=np.float64) ** 2)
    total = squares.sum() or 1.0
    prefix = np.concatenate([[0.0], np.cumsum(squares)])
    return np.array([prefix[squares.size - k] / total for k in kept_per_level])


class MagnitudeBackend:
    """Magnitude pruning for BERT heads/neurons and generic weight sparsity."""

    name = "magnitude"

    def __init__(self, *, progress: bool = False) -> None:
        self.progress = progress  # scoring and shrinking take well under a second: no bar needed

    def score(self, adapter: Any, calibration: Calibration | None = None) -> ErrorTable:
        units = adapter.units()
        errors = []
        importance: dict[str, np.ndarray] = {}
        modules = dict(adapter.model.named_modules())
        for unit in units:
            if unit.kind in ("attention", "ffn"):
                layer = adapter.layers[int(unit.name.split("encoder.layer.")[1].split(".")[0])]
                scores = head_scores(layer.attention) if unit.kind == "attention" else neuron_scores(layer)
                importance[unit.name] = scores
                errors.append(removed_share(scores, [int(lv.kept) for lv in unit.levels]))
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
        return ErrorTable(tuple(u.name for u in units), tuple(errors), importance, "magnitude: removed weight^2 share")

    def select(self, scores: ErrorTable, unit: str, kept: int) -> tuple[int, ...]:
        return top_k(scores.importance[unit], kept)

    def apply(self, adapter: Any, plan: Plan, calibration: Calibration | None = None) -> nn.Module:
        if adapter.architecture == "bert":
            heads, neurons = structured_keep(plan)
            return adapter.shrink(heads, neurons)
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
