"""Fisher mask tuning: layer-wise damped least-squares scales for kept heads and neurons, folded
into the output projections. The maths (``fisher_math.damped_scales``) is shared; gathering the
least-squares problem is per model family (``tuning_bert``, ``tuning_decoder``; the registry keyed by
adapter type is ``planner.backends.tuners``).

Every family works the same way: layers are processed in order 0..L-1, the student's input to a
layer comes from the already tuned earlier layers, and each block (attention, FFN) is
``output = residual + sum over kept units u of s_u * c_u(input) + bias`` (then a LayerNorm for
post-norm BERT), where ``c_u`` is unit u's contribution through the output projection. The scales
``s`` solve ``min ||teacher output - residual - bias - sum s_u c_u||^2`` over non-padding tokens,
damped toward 1. If a solve fails or a scale leaves [-10, 10], tuning stops and that block and the
rest keep binary masks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from planner.backends.fisher_math import damped_scales

Scales = dict[str, torch.Tensor]
"""unit name -> (size,) scale per head (query head) or neuron; 0 for removed ones."""


def binary_scales(adapter: Any, keep: Mapping[str, Sequence[int]]) -> Scales:
    """0/1 scales from unit -> kept indices (units not named keep everything)."""
    scales: Scales = {}
    for unit in adapter.units():
        if unit.kind not in ("attention", "ffn"):
            continue
        scale = torch.ones(unit.size)
        if unit.name in keep:
            scale.zero_()
            scale[list(keep[unit.name])] = 1.0
        scales[unit.name] = scale
    return scales


class BlockSolver:
    """Accumulates one block's least-squares problem over calibration batches and solves it.

    ``add_contributions(c, y, m)``: explicit per-unit contributions c (b, S, D, K), target y
    (b, S, D) and token mask m (b, S, 1). ``add_features(a, w, y)``: features a (T, K) of kept
    neurons, output columns w (D, K) and targets y (T, D) (normal equations with
    ``G = (w^T w) * (a^T a)``, no (T, D, K) tensor).
    """

    def __init__(self, kept: int) -> None:
        self.gram = torch.zeros(kept, kept, dtype=torch.float64)
        self.rhs = torch.zeros(kept, dtype=torch.float64)

    def add_contributions(self, c: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> None:
        masked = c * m.unsqueeze(-1)
        self.gram += torch.einsum("bsdk,bsdj->kj", masked, c).double()
        self.rhs += torch.einsum("bsdk,bsd->k", masked, y).double()

    def add_features(self, a: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
        a64, w64 = a.double(), w.double()
        self.gram += (w64.T @ w64) * (a64.T @ a64)
        self.rhs += (a64 * (y.double() @ w64)).sum(dim=0)

    def solve(self) -> torch.Tensor | None:
        scales = damped_scales(self.gram.numpy(), self.rhs.numpy())
        return None if scales is None else torch.from_numpy(scales).float()


def scale_inputs(module: nn.Module, scale: torch.Tensor) -> None:
    """Multiply the input features of a projection by ``scale`` in place: a Linear's weight columns,
    a GPT-2 ``Conv1D``'s weight rows (its weight is stored (in, out))."""
    weight = module.get_parameter("weight")
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            weight.mul_(scale.to(weight.dtype))
        else:
            weight.mul_(scale.to(weight.dtype).unsqueeze(1))


def fold_scales(adapter: Any, scales: Scales) -> Any:
    """An adapter over a copy of the model with head scales folded into the attention output
    projection's column blocks and neuron scales into the down projection's columns (never into the
    up projection: the activation is nonlinear). Removed units get scale 0 and are cut later."""
    model = copy.deepcopy(adapter.model)
    folded = adapter.rebind(model)
    for unit in folded.units():
        if unit.name not in scales:
            continue
        layer = folded.layers[unit.layer]
        if unit.kind == "attention":
            scale_inputs(folded.head_output(layer), scales[unit.name].repeat_interleave(folded.head_size))
        else:
            scale_inputs(folded.neuron_output(layer), scales[unit.name])
    return folded
