"""Head and neuron masks applied with forward pre-hooks (transformers 5 has no ``head_mask``).

A head mask value scales that head's context vector, i.e. its column block of W_O's input; a
neuron mask value scales the post-activation value, i.e. W2's input column. Masks may require
grad (Fisher scores are gradients with respect to them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def bert_masks(
    layers: Sequence[Any],
    *,
    head_mask: torch.Tensor | None = None,
    neuron_mask: torch.Tensor | None = None,
) -> Iterator[None]:
    """Apply masks to BERT layers while the block runs; hooks are always removed.

    Args:
        layers: the encoder layers (``BertLayer``), L of them, unpruned.
        head_mask: (L, H) multipliers per head, or None.
        neuron_mask: (L, N) multipliers per FFN neuron, or None.
    """
    handles = []
    try:
        for index, layer in enumerate(layers):
            if head_mask is not None:
                size = layer.attention.self.attention_head_size
                handles.append(
                    layer.attention.output.dense.register_forward_pre_hook(_scale_input(head_mask[index], size))
                )
            if neuron_mask is not None:
                handles.append(layer.output.dense.register_forward_pre_hook(_scale_input(neuron_mask[index], 1)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scale_input(mask: torch.Tensor, repeat: int):  # type: ignore[no-untyped-def]
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        scale = mask.repeat_interleave(repeat) if repeat > 1 else mask
        return (args[0] * scale.to(args[0].dtype), *args[1:])

    return hook
