"""Decoder timing workloads as llama.cpp runs them (the converter of ``--runtime llama.cpp``).

- a whole model (``PrefillForward``, ``DecodeStep``, ``GenerateLoop``): the model written as GGUF (no
  tokenizer: timing feeds token ids), the prompt, one step over a KV cache of the decode length, or the
  prompt and a greedy reply of N tokens;
- an attention unit (``AttentionUnit``) or an MLP (gated, or ``EmptyMLP``): a two-block timing model
  (``write_unit_gguf``) with the baseline of the same fixed block alone subtracted per sample.

A reply's table is not converted as such: it is the prefill and decode tables combined
(``combine_phases``); ``GenerateLoop`` is converted for the whole models (anchors, verification).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.models.decoder import AttentionUnit
from planner.models.decoder_surgery import EmptyMLP
from planner.models.gguf_writer import UNIT_VOCAB, GraphShape, write_gguf, write_unit_gguf
from planner.models.phases import DecodeStep, GenerateLoop, PrefillForward
from profilers.runtimes.llamacpp import LlamaCppWorkload, register_converter


def decoder_workload(
    module: nn.Module, inputs: Sequence[torch.Tensor], folder: Path, weight_type: str
) -> LlamaCppWorkload | None:
    """The llama.cpp form of a decoder workload (see the module docstring), or None for other modules."""
    if isinstance(module, (PrefillForward, DecodeStep, GenerateLoop)):
        model: Any = module.model
        path = folder / "model.gguf"
        write_gguf(model, path, weight_type=weight_type, timing_only=True, name="timed")
        vocab = int(model.config.vocab_size)
        if isinstance(module, DecodeStep):
            return LlamaCppWorkload(path, tokens=1, cached=module.seq_len, vocab=vocab)
        reply = module.tokens if isinstance(module, GenerateLoop) else 0
        return LlamaCppWorkload(path, tokens=int(inputs[0].shape[1]), cached=0, vocab=vocab, reply=reply)
    unit = _unit(module)
    if unit is None:
        return None
    shape, kwargs, cached = unit
    if shape.hidden != int(inputs[0].shape[-1]):
        return None  # an emptied unit of another model than the last one converted
    tokens = int(inputs[0].shape[1])
    path = folder / "unit.gguf"
    write_unit_gguf(path, shape, weight_type=weight_type, **kwargs)
    baseline = folder.parent / f"baseline-{shape.hidden}-{shape.head_dim}-{weight_type}.gguf"
    if not baseline.exists():
        write_unit_gguf(baseline, shape, weight_type=weight_type)
    return LlamaCppWorkload(path, tokens=tokens, cached=cached, vocab=UNIT_VOCAB, baseline=baseline)


def _unit(module: nn.Module) -> tuple[GraphShape, dict[str, nn.Module], int] | None:
    """(shapes, the unit as write_unit_gguf takes it, KV tokens cached) of a Llama-family unit.

    An emptied unit (``EmptyAttention``, ``EmptyMLP``) has no config of its own: it takes the shapes of
    the last full unit converted (units are converted in model order, dense level first)."""
    if isinstance(module, AttentionUnit):
        attention: Any = module.attention
        config = _remember(getattr(attention, "config", None))
        cache = module.cache
        cached = 0 if cache is None else int(cache[0].shape[2])
        return None if config is None else (GraphShape.of(config), {"attention": attention}, cached)
    if isinstance(module, EmptyMLP) or hasattr(module, "gate_proj"):
        config = _remember(getattr(module, "config", None))
        return None if config is None else (GraphShape.of(config), {"mlp": module}, 0)
    return None


_LAST_CONFIG: list[Any] = []


def _remember(config: Any) -> Any:
    if config is not None:
        _LAST_CONFIG[:] = [config]
    return _LAST_CONFIG[0] if _LAST_CONFIG else None


register_converter(decoder_workload)
