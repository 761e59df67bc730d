"""Fisher mask tuning: layer-wise damped least-squares scales for kept heads and neurons, folded
into the output projections. The maths (``fisher_math.damped_scales``) is shared; gathering the
least-squares problem is per model family (``tuning_bert``, ``tuning_decoder``; the registry keyed by
adapter type is ``planner.backends.tuners``).

Every family works the same way: layers are processed in order 0..L-1, the student's input to a
layer comes from the already tuned earlier layers, and each block (attention, FFN) is
``output = residual + sum over kept units u of s_u * c_u(input) + bias`` (then a LayerNorm for
post-norm BERT), where ``c_u`` is unit u's contribution through the output projection. The scales
``s`` solve ``min ||teacher output - residual - bias - sum s_u c_u||^2`` over non-padding tokens,
damped toward 1. A block whose solve fails or leaves a scale outside [-10, 10] keeps binary masks,
and tuning goes on with the next block (it sees the student's real inputs either way).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from planner.backends.fisher_math import damped_scales
from planner.models.units import Unit

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
    (b, S, D) and token mask m (b, S, 1). ``add_features(a, w, y, tokens)``: features a (T, K) of
    kept neurons, output columns w (D, K) and targets y (T, D), padding rows zeroed, ``tokens`` real
    rows (normal equations with ``G = (w^T w) * (a^T a)``, no (T, D, K) tensor).

    With ``intercept=True`` the problem also has a free bias b (D,), ``min ||y - sum_k s_k c_k - b||^2``
    (FLAP's bias compensation, fitted jointly with the scales): the scales solve the centred problem
    (``G - T cbar^T cbar``, ``r - T cbar^T ybar`` with the token means cbar (D, K), ybar (D,)) and
    ``shift = ybar - cbar @ s``.
    """

    def __init__(self, kept: int, *, intercept: bool = False) -> None:
        self.gram = torch.zeros(kept, kept, dtype=torch.float64)
        self.rhs = torch.zeros(kept, dtype=torch.float64)
        self.intercept = intercept
        self.tokens = 0.0
        self.c_sum: torch.Tensor | float = 0.0  # (D, K) once data arrived
        self.y_sum: torch.Tensor | float = 0.0  # (D,)
        self.shift: torch.Tensor | None = None
        """(D,) the fitted bias after ``solve`` with ``intercept``, else None."""

    def add_contributions(self, c: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> None:
        masked = c * m.unsqueeze(-1)
        self.gram += torch.einsum("bsdk,bsdj->kj", masked, c).double()
        self.rhs += torch.einsum("bsdk,bsd->k", masked, y).double()
        if self.intercept:
            self.tokens += float(m.sum())
            self.c_sum = self.c_sum + masked.double().sum(dim=(0, 1))
            self.y_sum = self.y_sum + (y * m).double().sum(dim=(0, 1))

    def add_features(self, a: torch.Tensor, w: torch.Tensor, y: torch.Tensor, tokens: int = 0) -> None:
        a64, w64 = a.double(), w.double()
        self.gram += (w64.T @ w64) * (a64.T @ a64)
        self.rhs += (a64 * (y.double() @ w64)).sum(dim=0)
        if self.intercept:
            self.tokens += tokens
            self.c_sum = self.c_sum + w64 * a64.sum(dim=0)
            self.y_sum = self.y_sum + y.double().sum(dim=0)

    def solve(self) -> torch.Tensor | None:
        gram, rhs = self.gram, self.rhs
        means = self._means()
        if means is not None:
            c_bar, y_bar = means
            gram = gram - self.tokens * (c_bar.T @ c_bar)
            rhs = rhs - self.tokens * (c_bar.T @ y_bar)
        scales = damped_scales(gram.numpy(), rhs.numpy())
        if scales is None:
            return None
        solved = torch.from_numpy(scales)
        if means is not None:
            self.shift = (means[1] - means[0] @ solved).float()
        return solved.float()

    def _means(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cbar (D, K), ybar (D,)) over the real tokens, when fitting an intercept on data."""
        if not (self.intercept and self.tokens > 0 and isinstance(self.c_sum, torch.Tensor)):
            return None
        return self.c_sum / self.tokens, torch.as_tensor(self.y_sum) / self.tokens


def keep_shift(shifts: dict[str, torch.Tensor], unit: str, solver: BlockSolver) -> None:
    """Record ``solver``'s fitted intercept (if any) as ``unit``'s shift."""
    if solver.shift is not None:
        shifts[unit] = solver.shift


@dataclass(frozen=True)
class Tuned:
    """What mask tuning found: per unit the scales of its heads / neurons (0 for removed ones) and,
    when fitted with an intercept, the bias its output projection gains ((D,); else no entry)."""

    scales: Scales
    shifts: dict[str, torch.Tensor] = field(default_factory=dict)


def input_columns(module: nn.Module, columns: torch.Tensor) -> torch.Tensor:
    """The weights that multiply input features ``columns`` of a projection, as (out, len(columns))
    (a Linear's weight columns; a GPT-2 Conv1D stores (in, out), so its rows, transposed)."""
    weight = module.get_parameter("weight")
    return weight[:, columns] if isinstance(module, nn.Linear) else weight[columns, :].T


def output_projection(adapter: Any, unit: Unit) -> nn.Module:
    """The module whose input channels are ``unit``'s heads (``head_output``) or neurons (``neuron_output``)."""
    layer = adapter.layers[unit.layer]
    return adapter.head_output(layer) if unit.kind == "attention" else adapter.neuron_output(layer)


def scale_inputs(module: nn.Module, scale: torch.Tensor) -> None:
    """Multiply the input features of a projection by ``scale`` in place: a Linear's weight columns,
    a GPT-2 ``Conv1D``'s weight rows (its weight is stored (in, out))."""
    weight = module.get_parameter("weight")
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            weight.mul_(scale.to(weight.dtype))
        else:
            weight.mul_(scale.to(weight.dtype).unsqueeze(1))


def fold_scales(adapter: Any, tuned: Tuned) -> Any:
    """An adapter over a copy of the model with head scales folded into the attention output
    projection's column blocks and neuron scales into the down projection's columns (never into the
    up projection: the activation is nonlinear), and fitted intercepts added to those projections'
    biases. Removed units get scale 0 and are cut later."""
    model = copy.deepcopy(adapter.model)
    folded = adapter.rebind(model)
    for unit in folded.units():
        if unit.name not in tuned.scales:
            continue
        scale = tuned.scales[unit.name]
        module = output_projection(folded, unit)
        scale_inputs(module, scale.repeat_interleave(folded.head_size) if unit.kind == "attention" else scale)
        if unit.name in tuned.shifts:
            add_bias(module, tuned.shifts[unit.name])
    return folded


def add_bias(module: nn.Module, shift: torch.Tensor) -> None:
    """Add ``shift`` (out,) to the module's bias, creating one when it has none."""
    weight = module.get_parameter("weight")
    bias = getattr(module, "bias", None)
    with torch.no_grad():
        if bias is None:
            module.bias = nn.Parameter(shift.to(weight.dtype))
        else:
            bias.add_(shift.to(bias.dtype))
