"""What a decoder's latency is, per phase: the timed forward of a causal language model.

- prefill: the prompt, ``batch x seq`` tokens at once; the forward that ``generate()`` runs first
  (logits of the last position only, as ``generate`` asks for them).
- decode: one new token per sequence with a KV cache of ``seq`` tokens already there. The cache is
  built once by a real prefill; after each timed step it is cropped back, so every sample costs
  the same as a real decoding step (including the cache append).
- generate: a reply of N tokens: prefill, then N greedy decode steps with the KV cache (fixed
  length, no early stop), as ``generate()`` does.

Layers whose attention was removed keep a one-wide dummy entry per token in the cache (see
``decoder_surgery.EmptyAttention``) so every cache layer counts the tokens it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from planner.models.hf_compat import output_cache, with_cache

if TYPE_CHECKING:
    from planner.config.settings import Measurement

PHASES = ("prefill", "decode", "generate")


@dataclass(frozen=True)
class Shape:
    """The input shape and phase a model is timed at: ``batch_size`` sequences of ``seq_len`` tokens
    (the prompt for prefill; the tokens already cached for decode), and for "generate" the number of
    new tokens."""

    batch_size: int
    seq_len: int
    phase: str = "prefill"
    generate_tokens: int = 0


def random_tokens(vocab_size: int, batch_size: int, seq_len: int, *, seed: int = 0) -> torch.Tensor:
    """(batch, seq) int64 token ids, away from the special tokens at the start of most vocabularies."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, max(vocab_size - 1, 1) // 2)
    return torch.randint(low, vocab_size, (batch_size, seq_len), generator=generator)


def _logits(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"a causal LM output has logits; got {type(output).__name__}")
    return logits


class PrefillForward(nn.Module):
    """``(input_ids, attention_mask) -> logits of the last position`` (B, V), no cache kept."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        return _logits(out)[:, -1]


class DecodeStep(nn.Module):
    """``(input_ids (B, 1)) -> logits (B, V)``: one decoding step over a KV cache of ``seq_len`` tokens.

    The cache comes from a real prefill of random tokens when the module is built. Each call appends
    one token as a real step does (the appended copy is the step's cost), then the cache layers get
    their prefill state back (references only: nothing is copied), so every call costs the same.
    """

    def __init__(self, model: nn.Module, *, batch_size: int, seq_len: int, vocab_size: int) -> None:
        super().__init__()
        self.model = model
        self.seq_len = seq_len
        prompt = random_tokens(vocab_size, batch_size, seq_len, seed=1)
        with torch.inference_mode():
            out = model(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=True, logits_to_keep=1)
        self.cache = output_cache(out)
        self._snapshot = [dict(layer.__dict__) for layer in self.cache.layers]

    def _restore(self) -> None:
        for layer, state in zip(self.cache.layers, self._snapshot, strict=True):
            layer.__dict__.clear()
            layer.__dict__.update(state)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Keep the cached keys and values, and the cache's own index tensors (e.g. a sliding window),
        # on the module's device and dtype (runtimes call .to(); ``fn`` casts only floating tensors).
        for state in self._snapshot:
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[name] = fn(value)
        self._restore()
        return super()._apply(fn, recurse)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(**with_cache(self.model, self.cache, input_ids=input_ids, use_cache=True))
        self._restore()
        return _logits(out)[:, -1]


class GenerateLoop(nn.Module):
    """``(input_ids, attention_mask) -> new tokens (B, N)``: prefill, then ``tokens`` greedy decode
    steps with the KV cache (fixed length: every sequence gets exactly ``tokens`` more)."""

    def __init__(self, model: nn.Module, *, tokens: int) -> None:
        super().__init__()
        self.model = model
        self.tokens = tokens

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
        token = _logits(out)[:, -1].argmax(dim=-1, keepdim=True)
        new = [token]
        for _ in range(self.tokens):
            out = self.model(**with_cache(self.model, cache, input_ids=token, use_cache=True))
            token = _logits(out)[:, -1].argmax(dim=-1, keepdim=True)
            new.append(token)
        return torch.cat(new[1:], dim=1)


def timed_forward(model: nn.Module, shape: Shape, *, vocab_size: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module timed for a causal LM at ``shape`` and its inputs."""
    if shape.phase == "decode":
        step = DecodeStep(model, batch_size=shape.batch_size, seq_len=shape.seq_len, vocab_size=vocab_size)
        return step, (random_tokens(vocab_size, shape.batch_size, 1, seed=2),)
    ids = random_tokens(vocab_size, shape.batch_size, shape.seq_len)
    inputs = (ids, torch.ones_like(ids))
    if shape.phase == "generate":
        return GenerateLoop(model, tokens=shape.generate_tokens), inputs
    return PrefillForward(model), inputs


def shape_of(measurement: Measurement) -> Shape:
    """The input shape and phase a measurement times."""
    return Shape(measurement.batch_size, measurement.seq_len, measurement.phase, measurement.generate_tokens)
