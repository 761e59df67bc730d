"""BERT-family encoders (``BertModel`` and ``BertFor*`` models built on it): units, inputs, surgery.

Per layer: one attention unit (heads kept H..0) and one FFN unit (neurons kept N..0 on a grid).
Unit names are module paths in the user's model: ``<prefix>encoder.layer.<i>.attention`` and
``<prefix>encoder.layer.<i>.ffn`` (the FFN is ``intermediate`` + ``output`` of that layer).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from planner.errors import UnsupportedModelError
from planner.models.base import OutputTensor, UnitWorkload, prefill_only
from planner.models.bert_surgery import attention_heads, ffn_neurons, prune_heads, prune_neurons
from planner.models.phases import Shape
from planner.models.transformer import TransformerAdapter
from planner.models.units import Unit, first_kept

SUPPORTED = "BertModel and BertFor* models built on it (e.g. BertForSequenceClassification)"


def find_bert(model: nn.Module) -> tuple[Any, str]:
    """The ``BertModel`` inside ``model`` and its module-path prefix ("" or "bert.")."""
    from transformers import BertModel

    if isinstance(model, BertModel):
        return model, ""
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner, "bert."
    raise UnsupportedModelError(
        f"unsupported architecture {type(model).__name__}; supported: {SUPPORTED}, or any model through "
        "a 'package.module:factory' spec (generic Linear/Conv2d units)."
    )


class AttentionBlock(nn.Module):
    """Standalone attention unit for timing: (B, S, D) [, mask] -> (B, S, D)."""

    def __init__(self, attention: Any) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attention(hidden, mask)[0]


class FFNBlock(nn.Module):
    """Standalone FFN unit for timing: (B, S, D) -> (B, S, D), residual and LayerNorm included."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.intermediate = layer.intermediate
        self.output = layer.output

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)


class BertAdapter(TransformerAdapter):
    """Units, example inputs, standalone workloads and shrinking for a BERT encoder."""

    architecture = "bert"

    def _read_config(self) -> None:
        self.bert: Any
        self.bert, self.prefix = find_bert(self.model)
        config = self.bert.config
        self.num_heads = int(config.num_attention_heads)
        self.num_groups = self.num_heads
        self.head_size = int(config.hidden_size // config.num_attention_heads)
        self.intermediate_size = int(config.intermediate_size)

    def layers_of(self, model: nn.Module) -> Sequence[Any]:
        return find_bert(model)[0].encoder.layer

    def unit_names(self, layer: int) -> tuple[str, str]:
        base = f"{self.prefix}encoder.layer.{layer}"
        return f"{base}.attention", f"{base}.ffn"

    def unit_modules(self, layer: int) -> tuple[dict[str, str], dict[str, str]]:
        base = f"{self.prefix}encoder.layer.{layer}"
        attention = {
            "query": f"{base}.attention.self.query",
            "key": f"{base}.attention.self.key",
            "value": f"{base}.attention.self.value",
            "output": f"{base}.attention.output.dense",
        }
        return attention, {"up": f"{base}.intermediate.dense", "down": f"{base}.output.dense"}

    def attention_heads(self, layer: Any) -> int:
        return attention_heads(layer.attention)

    def ffn_neurons(self, layer: Any) -> int:
        return ffn_neurons(layer)

    def prune_attention(self, layer: Any, keep: Sequence[int]) -> None:
        layer.attention = prune_heads(layer.attention, keep)

    def prune_ffn(self, layer: Any, keep: Sequence[int]) -> None:
        prune_neurons(layer, keep)

    def head_output(self, layer: Any) -> nn.Module:
        return layer.attention.output.dense

    def neuron_output(self, layer: Any) -> nn.Module:
        return layer.output.dense

    def signatures(self) -> tuple[str, str]:
        config = self.bert.config
        common = f"D={config.hidden_size}:attn={config._attn_implementation}"
        attention = f"bert-attention:H={self.num_heads}:d={self.head_size}:{common}"
        ffn = f"bert-ffn:N={self.intermediate_size}:act={config.hidden_act}:{common}"
        return attention, ffn

    def example_inputs(self, batch_size: int, seq_len: int, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask), both (batch, seq) int64; random tokens, no padding."""
        limit = int(self.bert.config.max_position_embeddings)
        if seq_len > limit:
            raise UnsupportedModelError(
                f"The 'seq_len' parameter must be <= {limit} for this model (max_position_embeddings). "
                f"Got {seq_len} instead."
            )
        generator = torch.Generator().manual_seed(seed)
        vocab = int(self.bert.config.vocab_size)
        ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=generator)
        return ids, torch.ones_like(ids)

    def forward_module(self) -> nn.Module:
        return self.forward_module_of(self.model)

    def forward_module_of(self, model: nn.Module) -> nn.Module:
        """``forward_module`` for a (shrunk) copy of this model."""
        return OutputTensor(model, ("input_ids", "attention_mask"))

    def captured_unit_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """What layer 0's attention and FFN receive in a real forward: ((hidden[, mask]), ffn_input)."""
        seen: dict[str, Any] = {}
        layer = self.layers[0]

        def attention_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen["hidden"] = args[0]
            seen["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")

        def ffn_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            seen["ffn"] = args[0]

        handles = [
            layer.attention.register_forward_pre_hook(attention_hook, with_kwargs=True),
            layer.intermediate.register_forward_pre_hook(ffn_hook),
        ]
        try:
            with torch.inference_mode():
                self.forward_module()(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        hidden, mask, ffn = seen["hidden"], seen["mask"], seen["ffn"]
        assert isinstance(hidden, torch.Tensor) and isinstance(ffn, torch.Tensor)
        attention_inputs = (hidden.clone(),) if mask is None else (hidden.clone(), mask.clone())
        return attention_inputs, ffn.clone()

    def timed(self, model: nn.Module, shape: Shape) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        prefill_only(shape, "BERT")
        return self.forward_module_of(model), self.example_inputs(shape.batch_size, shape.seq_len)

    def workloads(
        self,
        units: Sequence[Unit],
        shape: Shape,
        *,
        runtime: str,
        device: str,
        dtype: torch.dtype,
    ) -> list[UnitWorkload]:
        prefill_only(shape, "BERT")
        attention_inputs, ffn_input = self.captured_unit_inputs(self.example_inputs(shape.batch_size, shape.seq_len))
        layer = self.layers[0]
        out: list[UnitWorkload] = []
        done: set[str] = set()
        for unit in units:
            if unit.signature in done:
                continue
            done.add(unit.signature)
            for level in unit.levels:
                impl = "dense" if level.index == 0 else "shrunk"
                keep = first_kept(unit, level)
                if unit.kind == "attention":
                    module: nn.Module = AttentionBlock(prune_heads(layer.attention, keep))
                    out.append(UnitWorkload(unit.signature, level.index, impl, module, attention_inputs))
                else:
                    block = copy.deepcopy(layer)
                    prune_neurons(block, keep)
                    out.append(UnitWorkload(unit.signature, level.index, impl, FFNBlock(block), (ffn_input,)))
        return out
