"""Bias compensation (FLAP, An et al. 2024): after heads / neurons are removed, each output projection
(attention ``o_proj`` / BERT ``attention.output.dense``, MLP ``down_proj`` / ``output.dense``) gains the
mean of what the pruned layer no longer produces, as a bias. No training, one calibration pass.

For an output projection with dense weights W (out, in), the weights it ends with W' (out, in; zero on
removed input channels, possibly rescaled on kept ones by mask tuning) and the mean input over the
calibration set's real tokens mu (in,), the bias shift is (W - W') @ mu. Without tuning that is FLAP's
sum over removed channels j of W[:, j] * mu_j; after mask tuning it is the tuned layer's mean residual,
the intercept the least-squares fit left out (for fixed weights, the shift that minimises the
calibration set's squared output error).

The means are taken in the dense model (as FLAP does), so the shift is exact for the first pruned
layer and an estimate for the later ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.backends.activations import input_moments
from planner.backends.base import structured_units
from planner.backends.tuning import add_bias
from planner.models.transformer import head_columns
from planner.models.units import Unit
from planner.tasks.base import Task


def output_projection(adapter: Any, unit: Unit) -> nn.Module:
    """The module whose input channels are ``unit``'s heads (``head_output``) or neurons (``neuron_output``)."""
    layer = adapter.layers[unit.layer]
    return adapter.head_output(layer) if unit.kind == "attention" else adapter.neuron_output(layer)


def output_means(adapter: Any, task: Task) -> dict[str, np.ndarray]:
    """unit name -> (in,) mean input of its output projection over the calibration set's real tokens
    (one pass of ``adapter``'s model)."""
    units = structured_units(adapter)
    moments = input_moments(task, adapter.model, [output_projection(adapter, u) for u in units])
    return {u.name: m.mean for u, m in zip(units, moments, strict=True)}


def columns(module: nn.Module) -> torch.Tensor:
    """(out, in) float64 weights of a Linear or GPT-2 Conv1D (which stores (in, out))."""
    weight = module.get_parameter("weight").detach().double()
    return weight if isinstance(module, nn.Linear) else weight.T


def bias_shift(dense: nn.Module, pruned: nn.Module, kept: np.ndarray, mean: np.ndarray) -> torch.Tensor:
    """(out,) ``(W - W') @ mean`` where W' is ``pruned``'s weights with the input channels outside
    ``kept`` (indices, (k,)) zeroed."""
    after = torch.zeros_like(columns(dense))
    index = torch.as_tensor(kept, dtype=torch.long)
    after[:, index] = columns(pruned)[:, index]
    return (columns(dense) - after) @ torch.as_tensor(mean, dtype=torch.float64)


def kept_channels(adapter: Any, unit: Unit, kept: Sequence[int]) -> np.ndarray:
    """Input channels of ``unit``'s output projection that its kept heads / neurons own."""
    width = adapter.head_size if unit.kind == "attention" else 1
    return head_columns([int(i) for i in kept], width, torch.device("cpu")).numpy()


def compensate(dense: Any, pruned: Any, keep: Mapping[str, Sequence[int]], means: Mapping[str, np.ndarray]) -> None:
    """Add the bias shift of every unit in ``keep`` to ``pruned``'s output projections, in place.

    Args:
        dense: adapter over the dense model (W).
        pruned: adapter over a full-width copy whose output projections hold W' on kept channels
            (the dense copy, or the mask-tuned copy); not yet shrunk.
        keep: unit name -> kept heads / neurons (units left out stay dense).
        means: ``output_means(dense, task)``.
    """
    dense_units = {u.name: u for u in structured_units(dense)}
    for unit in structured_units(pruned):
        if unit.name not in keep:
            continue
        kept = kept_channels(pruned, unit, keep[unit.name])
        target = output_projection(pruned, unit)
        shift = bias_shift(output_projection(dense, dense_units[unit.name]), target, kept, means[unit.name])
        add_bias(target, shift)


def compensated_shrink(adapter: Any, keep: Mapping[str, Sequence[int]], task: Task) -> nn.Module:
    """``adapter.shrink(keep)`` with the removed channels' mean contribution added as biases (FLAP)."""
    copied = adapter.rebind(copy.deepcopy(adapter.model))
    compensate(adapter, copied, keep, output_means(adapter, task))
    return copied.shrink(keep)
