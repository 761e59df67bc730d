"""Physical removal of attention heads and FFN neurons from BERT layers (transformers 5).

transformers 5 removed ``prune_heads``; this replaces it. Removing head h drops rows
h*d:(h+1)*d of W_Q, W_K, W_V (and biases) and the matching columns of the attention output
projection W_O; removing neuron i drops row i of W1 (and b1) and column i of W2. A block with zero
kept units still adds its output bias before the LayerNorm, so it becomes ``LayerNorm(x + b)``,
never an identity.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from planner.models.transformer import columns, head_columns, rows


def check_keep(keep: Sequence[int], total: int, what: str) -> list[int]:
    """Sorted distinct indices in 0..total-1 (ValueError naming ``what`` otherwise)."""
    kept = sorted({int(i) for i in keep})
    if len(kept) != len(list(keep)):
        raise ValueError(f"{what} to keep contain duplicates: {list(keep)}")
    if kept and (kept[0] < 0 or kept[-1] >= total):
        raise ValueError(f"{what} to keep must be in 0..{total - 1}; got {kept}")
    return kept


class BiasLayerNorm(nn.Module):
    """``LayerNorm(residual + bias)``: what a block with no kept units computes. (..., D) -> (..., D)."""

    def __init__(self, bias: torch.Tensor | None, layer_norm: nn.LayerNorm) -> None:
        super().__init__()
        hidden = layer_norm.normalized_shape[0]
        value = torch.zeros(hidden) if bias is None else bias.detach().clone()
        self.bias = nn.Parameter(value.to(layer_norm.weight.dtype))
        self.LayerNorm = copy.deepcopy(layer_norm)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.bias)


class HeadlessAttention(nn.Module):
    """Drop-in for ``BertAttention`` with zero heads: returns ``(LayerNorm(x + b_O), None)``."""

    num_heads = 0

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = BiasLayerNorm(output.dense.bias, output.LayerNorm)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return self.output(hidden_states), None


class EmptyIntermediate(nn.Module):
    """Drop-in for ``BertIntermediate`` with zero neurons: computes nothing (its output is unused)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states


class NeuronlessOutput(nn.Module):
    """Drop-in for ``BertOutput`` with zero neurons: ``LayerNorm(residual + b2)``."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.block = BiasLayerNorm(output.dense.bias, output.LayerNorm)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.block(input_tensor)


def attention_heads(attention: Any) -> int:
    """Number of heads a (possibly pruned) attention block has."""
    if isinstance(attention, HeadlessAttention):
        return 0
    return int(attention.self.query.out_features // attention.self.attention_head_size)


def ffn_neurons(layer: Any) -> int:
    """Number of FFN neurons a (possibly pruned) BERT layer has."""
    if isinstance(layer.intermediate, EmptyIntermediate):
        return 0
    return int(layer.intermediate.dense.out_features)


def prune_heads(attention: Any, keep: Sequence[int]) -> nn.Module:
    """A new attention block keeping heads ``keep`` (indices into its current heads).

    The input is not modified. ``keep=[]`` gives a ``HeadlessAttention``.
    """
    heads = attention_heads(attention)
    kept = check_keep(keep, heads, "heads")
    if not kept:
        if isinstance(attention, HeadlessAttention):
            return copy.deepcopy(attention)
        return HeadlessAttention(attention.output)
    if len(kept) == heads:
        return copy.deepcopy(attention)
    size = attention.self.attention_head_size
    index = head_columns(kept, size, attention.self.query.weight.device)
    new: Any = copy.deepcopy(attention)
    new.self.query = rows(attention.self.query, index)
    new.self.key = rows(attention.self.key, index)
    new.self.value = rows(attention.self.value, index)
    new.output.dense = columns(attention.output.dense, index)
    new.self.num_attention_heads = len(kept)
    new.self.all_head_size = len(kept) * size
    return new


def prune_neurons(layer: Any, keep: Sequence[int]) -> None:
    """Keep FFN neurons ``keep`` of ``layer`` IN PLACE (call it on a copy you own)."""
    neurons = ffn_neurons(layer)
    kept = check_keep(keep, neurons, "neurons")
    if len(kept) == neurons:
        return
    if not kept:
        layer.output = NeuronlessOutput(layer.output)
        layer.intermediate = EmptyIntermediate()
        return
    index = torch.tensor(kept, device=layer.intermediate.dense.weight.device)
    layer.intermediate.dense = rows(layer.intermediate.dense, index)
    layer.output.dense = columns(layer.output.dense, index)
