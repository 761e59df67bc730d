"""Bias compensation (FLAP, An et al. 2024): after heads / neurons are removed, each output projection
(attention ``o_proj`` / BERT ``attention.output.dense``, MLP ``down_proj`` / ``output.dense``) gains the
mean of what the removed channels produced, as a bias: sum over removed input channels j of
W[:, j] * mu_j, with mu the projection's mean input in the dense model over the calibration set's
real tokens. No training, one calibration pass. Exact in mean for the first pruned layer, an estimate
for later ones (their inputs change).

With Fisher's mask tuning the same idea is an intercept fitted jointly with the scales
(``planner.backends.tuning.BlockSolver``), not this dense-mean shift: the tuned layers see the pruned
model's inputs, and a dense-mean shift after tuning lost 10 points on MiniLM.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.backends.activations import dense_input_moments
from planner.backends.base import structured_units
from planner.backends.tuning import add_bias, input_columns, output_projection
from planner.models.transformer import head_columns
from planner.models.units import Unit
from planner.tasks.base import Task


def output_means(adapter: Any, task: Task) -> dict[str, np.ndarray]:
    """unit name -> (in,) mean input of its output projection over the calibration set's real tokens
    (one pass of ``adapter``'s model)."""
    units = structured_units(adapter)
    moments = dense_input_moments(task, adapter.model, [output_projection(adapter, u) for u in units])
    return {u.name: m.mean for u, m in zip(units, moments, strict=True)}


def removed_channels(adapter: Any, unit: Unit, kept: Sequence[int]) -> torch.Tensor:
    """Input channels of ``unit``'s output projection that its removed heads / neurons owned."""
    width = adapter.head_size if unit.kind == "attention" else 1
    owned = torch.ones(unit.size * width, dtype=torch.bool)
    owned[head_columns([int(i) for i in kept], width, torch.device("cpu"))] = False
    return torch.nonzero(owned).flatten()


def compensate(module: nn.Module, adapter: Any, unit: Unit, kept: Sequence[int], mean: np.ndarray) -> None:
    """Add to ``module`` (``unit``'s output projection, still full width) the mean contribution of the
    channels ``kept`` leaves out, in place: sum over removed j of W[:, j] * mean[j] (``mean``: (in,))."""
    removed = removed_channels(adapter, unit, kept)
    shift = torch.as_tensor(mean, dtype=torch.float64)[removed]
    add_bias(module, input_columns(module, removed).detach().double() @ shift)


def compensated_shrink(adapter: Any, keep: Mapping[str, Sequence[int]], task: Task) -> nn.Module:
    """``adapter.shrink(keep)`` with the removed channels' mean contribution added as biases (FLAP)."""
    means = output_means(adapter, task)
    copied = adapter.rebind(copy.deepcopy(adapter.model))
    for unit in structured_units(copied):
        if unit.name in keep:
            compensate(output_projection(copied, unit), copied, unit, keep[unit.name], means[unit.name])
    return copied.shrink(keep)
