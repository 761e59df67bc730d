"""Physical removal of query heads, key/value groups and MLP neurons from decoder layers.

Llama-family attention (Llama, Qwen2/3, Mistral, Gemma 3): removing query head h drops rows
h*d:(h+1)*d of q_proj (and its bias) and those columns of o_proj; a key/value group is dropped with
all its query heads (its rows of k_proj and v_proj). Every kept group keeps the same number of query
heads (grouped-query attention stays valid; ``num_key_value_groups`` becomes that number). Gated MLP
neuron i: row i of gate_proj and up_proj, column i of down_proj.

GPT-2 (``Conv1D`` layers store weights as (in, out)): head h is columns h*d:(h+1)*d of each of the q,
k and v sections of ``c_attn`` and those rows of ``attn.c_proj``; neuron i is column i of ``c_fc``
and row i of ``mlp.c_proj``.

A block with nothing kept computes nothing but still adds its output bias (if any): it becomes
``EmptyAttention`` / ``EmptyMLP``, which return that bias (zeros without one), never an identity.
A pre-norm layer whose two blocks are both empty without biases adds zeros to its input: it is the
identity, and becomes a ``SkippedLayer`` that skips its norms too (depth pruning, exactly). Any other
whose attention is empty becomes an ``AttentionlessLayer``, which skips the input norm and adds the
attention's bias (if any, from FLAP's compensation) straight to the stream (Llama family; the output
is the same). One whose MLP alone is empty keeps running its attention half, but the norm before the
MLP becomes an ``UnusedNorm`` (the emptied MLP ignores its input). So each emptied block skips its own
norm, and a layer's savings add up by block: a memory-bound table prices them per block
(``profilers.width_model``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from planner.models.hf_compat import cache_argument
from planner.models.transformer import columns, head_columns, rows


def _bias_like(bias: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    if bias is None:
        return torch.zeros_like(hidden)
    return bias.to(hidden.dtype).expand_as(hidden).clone()


def count_tokens(kwargs: dict[str, Any], hidden_states: torch.Tensor, layer_idx: int) -> None:
    """With a KV cache among a block's ``kwargs``, append a one-wide zero entry per new token to layer
    ``layer_idx``, so a layer without attention still counts the tokens it has seen (models read the
    sequence length from the cache; an empty entry reads 0). ``hidden_states``: (batch, seq, hidden)."""
    cache = cache_argument(kwargs)
    if cache is not None and hasattr(cache, "update"):
        batch, seq = hidden_states.shape[:2]
        marker = hidden_states.new_zeros(batch, 1, seq, 1)
        cache.update(marker, marker, layer_idx)


class EmptyAttention(nn.Module):
    """Drop-in for a decoder attention block with no heads: returns ``(output bias or zeros, None)``.

    With a KV cache it appends a one-wide zero entry per new token, so this layer's cache still counts
    the tokens it has seen (models read the sequence length from the cache; an empty entry reads 0).
    """

    num_heads = 0

    def __init__(self, bias: torch.Tensor | None, *, layer_idx: int) -> None:
        super().__init__()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        count_tokens(kwargs, hidden_states, self.layer_idx)
        return _bias_like(self.bias, hidden_states), None


class EmptyMLP(nn.Module):
    """Drop-in for an MLP with no neurons: returns its output bias (zeros without one)."""

    def __init__(self, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _bias_like(self.bias, hidden_states)


class SkippedLayer(nn.Module):
    """A removed decoder layer (both blocks empty, no biases): returns its input unchanged.

    Keeps the emptied blocks as ``self_attn`` / ``mlp`` (so shapes read as 0 heads, 0 neurons) and the
    layer's ``attention_type`` (families that pick a mask per layer read it). With a KV cache it
    appends the same one-wide marker ``EmptyAttention`` does, so the cache still counts its tokens.
    """

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.self_attn: EmptyAttention = layer.self_attn
        self.mlp: EmptyMLP = layer.mlp
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # (batch, seq, hidden) in and out
        count_tokens(kwargs, hidden_states, self.self_attn.layer_idx)
        return hidden_states


class AttentionlessLayer(nn.Module):
    """A pre-norm decoder layer whose attention block was emptied: runs only its MLP half.

    The layer it replaces computed ``h + b`` for its attention half (the input norm, a constant output
    ``b``: the block's bias, zeros without one, and the residual add: about 0.1 ms per layer in SmolLM2
    decode on 2 CPU cores, spent on the norm), then ``h + mlp(post_attention_layernorm(h))``. This adds
    ``b`` without the norm and runs the second part (an emptied MLP adds its bias alone), so its output
    is the same. Keeps every submodule under its name (the weights save and load as the layer's), and
    with a KV cache appends the one-wide marker ``EmptyAttention`` does.
    """

    self_attn: EmptyAttention
    mlp: nn.Module
    post_attention_layernorm: nn.Module

    def __init__(self, layer: Any) -> None:
        super().__init__()
        for name, module in layer.named_children():
            self.add_module(name, module)
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # (batch, seq, hidden) in and out
        count_tokens(kwargs, hidden_states, self.self_attn.layer_idx)
        if self.self_attn.bias is not None:
            hidden_states = hidden_states + self.self_attn.bias.to(hidden_states.dtype)
        if isinstance(self.mlp, EmptyMLP):
            return hidden_states + self.mlp(hidden_states)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class UnusedNorm(nn.Module):
    """The norm before an emptied MLP, not computed: that MLP returns its bias (zeros without one)
    whatever it is given, so this returns its input unchanged and the layer's output is the same.

    Keeps the norm's parameters and buffers under their own names, so the weights save and load as the
    layer's. Without it an emptied MLP's layer still ran the norm (about 0.05-0.1 ms a layer in SmolLM2
    decode on 2 CPU cores) that a removed layer skips, so removing a layer saved more than emptying its
    two blocks, which an additive cost model cannot price.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        for name, parameter in norm.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in norm.named_buffers(recurse=False):
            self.register_buffer(name, buffer)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states


def has_unused_mlp_norm(layer: nn.Module) -> bool:
    """Whether a plain pre-norm layer's MLP is empty while its attention is not (``UnusedNorm`` applies)."""
    return (
        {name for name, _ in layer.named_children()} == PRE_NORM_PARTS
        and isinstance(getattr(layer, "mlp", None), EmptyMLP)
        and not isinstance(getattr(layer, "self_attn", None), EmptyAttention)
        and not isinstance(getattr(layer, "post_attention_layernorm", None), UnusedNorm)
    )


PRE_NORM_PARTS = frozenset({"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"})
"""The children of a plain pre-norm decoder layer (Llama, Qwen2/3, Mistral); families with more norms
around their blocks (Gemma 3) keep their layers as they are."""


def is_attentionless_layer(layer: nn.Module) -> bool:
    """Whether a plain pre-norm layer's attention half adds a constant (its bias, or nothing): its
    attention is empty, and the layer is not the identity (``is_identity_layer``)."""
    attention = getattr(layer, "self_attn", None)
    return (
        {name for name, _ in layer.named_children()} == PRE_NORM_PARTS
        and isinstance(attention, EmptyAttention)
        and not is_identity_layer(layer)
    )


def is_identity_layer(layer: nn.Module) -> bool:
    """Whether a pre-norm layer adds nothing: both blocks empty and without biases."""
    attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return (
        isinstance(attention, EmptyAttention)
        and isinstance(mlp, EmptyMLP)
        and attention.bias is None
        and mlp.bias is None
    )


# ----- Llama family ----------------------------------------------------------------------------
def llama_heads(attention: Any) -> int:
    """Query heads of a (possibly pruned) Llama-family attention block."""
    if isinstance(attention, EmptyAttention):
        return 0
    return int(attention.q_proj.out_features // attention.head_dim)


def llama_groups(attention: Any) -> int:
    """Key/value groups of a (possibly pruned) Llama-family attention block."""
    if isinstance(attention, EmptyAttention):
        return 0
    return int(attention.k_proj.out_features // attention.head_dim)


def prune_llama_attention(attention: Any, keep: Sequence[int], *, heads_per_group: int) -> nn.Module:
    """A new attention block keeping query heads ``keep`` (validated: same count in each kept group).

    Args:
        heads_per_group: query heads per key/value group in the dense block.
    """
    if not keep:
        return EmptyAttention(attention.o_proj.bias, layer_idx=attention.layer_idx)
    import copy

    kept = sorted(keep)
    groups = sorted({h // heads_per_group for h in kept})
    size = attention.head_dim
    device = attention.q_proj.weight.device
    new: Any = copy.deepcopy(attention)
    new.q_proj = rows(attention.q_proj, head_columns(kept, size, device))
    kv = head_columns(groups, size, device)
    new.k_proj = rows(attention.k_proj, kv)
    new.v_proj = rows(attention.v_proj, kv)
    new.o_proj = columns(attention.o_proj, head_columns(kept, size, device))
    new.num_key_value_groups = len(kept) // len(groups)
    return new


def gated_mlp_neurons(mlp: Any) -> int:
    return 0 if isinstance(mlp, EmptyMLP) else int(mlp.gate_proj.out_features)


def prune_gated_mlp(mlp: Any, keep: Sequence[int]) -> nn.Module:
    """A new gated MLP keeping neurons ``keep`` (an ``EmptyMLP`` for none)."""
    if not keep:
        return EmptyMLP(mlp.down_proj.bias)
    import copy

    index = torch.tensor(sorted(keep), device=mlp.gate_proj.weight.device)
    new: Any = copy.deepcopy(mlp)
    new.gate_proj = rows(mlp.gate_proj, index)
    new.up_proj = rows(mlp.up_proj, index)
    new.down_proj = columns(mlp.down_proj, index)
    if hasattr(new, "intermediate_size"):
        new.intermediate_size = len(index)
    return new


# ----- GPT-2 -----------------------------------------------------------------------------------
def _conv1d(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(weight.shape[1], weight.shape[0]).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def gpt2_heads(attention: Any) -> int:
    return 0 if isinstance(attention, EmptyAttention) else int(attention.num_heads)


def prune_gpt2_attention(attention: Any, keep: Sequence[int]) -> nn.Module:
    """A new GPT-2 attention block keeping heads ``keep``."""
    if not keep:
        return EmptyAttention(attention.c_proj.bias, layer_idx=attention.layer_idx)
    import copy

    size = attention.head_dim
    width = attention.split_size
    cols = head_columns(sorted(keep), size, attention.c_attn.weight.device)
    qkv = torch.cat([cols, cols + width, cols + 2 * width])
    new: Any = copy.deepcopy(attention)
    new.c_attn = _conv1d(attention.c_attn.weight[:, qkv], attention.c_attn.bias[qkv])
    new.c_proj = _conv1d(attention.c_proj.weight[cols], attention.c_proj.bias)
    new.num_heads = len(keep)
    new.split_size = len(keep) * size
    new.embed_dim = len(keep) * size
    return new


def gpt2_neurons(mlp: Any) -> int:
    return 0 if isinstance(mlp, EmptyMLP) else int(mlp.c_fc.weight.shape[1])


def prune_gpt2_mlp(mlp: Any, keep: Sequence[int]) -> nn.Module:
    """A new GPT-2 MLP keeping neurons ``keep``."""
    if not keep:
        return EmptyMLP(mlp.c_proj.bias)
    import copy

    index = torch.tensor(sorted(keep), device=mlp.c_fc.weight.device)
    new: Any = copy.deepcopy(mlp)
    new.c_fc = _conv1d(mlp.c_fc.weight[:, index], mlp.c_fc.bias[index])
    new.c_proj = _conv1d(mlp.c_proj.weight[index], mlp.c_proj.bias)
    return new
