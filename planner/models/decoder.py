"""Decoder LLMs: Llama-family models with grouped-query attention (Llama, Qwen2 / Qwen3, Mistral,
Gemma 3) and GPT-2; units, inputs per phase, standalone workloads, surgery.

Per layer: one attention unit and one MLP unit (kind "ffn": neurons kept on a grid, 0 = block
removed, its residual stays). Llama-family attention levels keep whole key/value groups and the same
number of query heads in each (3 groups x 3 heads, 3 x 2, ... for SmolLM2's 9 query / 3 KV heads),
then 0; GPT-2 (multi-head) keeps heads H..0. Unit names are module paths:
``model.layers.<i>.self_attn`` / ``model.layers.<i>.mlp`` (``transformer.h.<i>.attn`` / ``.mlp``).

Phases (``planner.models.phases``): prefill (the prompt), decode (one token over a KV cache of
``seq_len`` tokens) and generate (prefill + N decode steps). Units are timed in the phase asked for:
decode-phase attention appends one token to a cache of ``seq_len`` tokens, exactly as in a step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from planner.config.specs import LLAMA_FAMILY
from planner.errors import UnsupportedModelError
from planner.models.base import OutputTensor, UnitWorkload
from planner.models.decoder_surgery import (
    AttentionlessLayer,
    EmptyAttention,
    EmptyMLP,
    SkippedLayer,
    UnusedNorm,
    gated_mlp_neurons,
    gpt2_heads,
    gpt2_neurons,
    has_unused_mlp_norm,
    is_attentionless_layer,
    is_identity_layer,
    llama_groups,
    llama_heads,
    prune_gated_mlp,
    prune_gpt2_attention,
    prune_gpt2_mlp,
    prune_llama_attention,
)
from planner.models.hf_compat import with_cache
from planner.models.phases import Shape, random_tokens, timed_forward
from planner.models.transformer import TransformerAdapter
from planner.models.units import Unit, first_kept

SUPPORTED_DECODERS = ", ".join([*LLAMA_FAMILY.values(), "GPT2LMHeadModel"])


class AttentionUnit(nn.Module):
    """Standalone decoder attention for timing: (B, S, D) post-norm hidden states -> (B, S, D).

    ``kwargs`` are what the model passed the block in a real forward (rotary position embeddings,
    attention mask); in the decode phase ``cache`` holds the unit's keys and values of the tokens
    already seen, and each call appends to a copy (as a real step does), leaving the cache as it was.
    Every tensor is a (non-persistent) buffer, so ``.to(device, dtype)`` moves all of it: a plain
    dict of tensors stays behind on the CPU and a CUDA forward fails ("Expected all tensors to be on
    the same device").
    """

    def __init__(self, attention: nn.Module, kwargs: dict[str, Any], cache: tuple[torch.Tensor, ...] | None) -> None:
        super().__init__()
        self.attention = attention
        self._layout: dict[str, Any] = {}
        """kwarg name -> buffer name, tuple of buffer names, or ("plain", value) for non-tensors."""
        for key, value in kwargs.items():
            self._layout[key] = self._register(f"kwarg_{key}", value)
        self._cache_buffers = None if cache is None else self._register("cache", tuple(cache))

    def _register(self, name: str, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            self.register_buffer(name, value, persistent=False)
            return name
        if isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            names = tuple(f"{name}_{i}" for i in range(len(value)))
            for part, tensor in zip(names, value, strict=True):
                self.register_buffer(part, tensor, persistent=False)
            return names
        return ("plain", value)

    def _value(self, entry: Any) -> Any:
        if isinstance(entry, str):
            return getattr(self, entry)
        if entry and entry[0] == "plain":
            return entry[1]
        return tuple(getattr(self, part) for part in entry)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The block's keyword arguments, on the module's device and dtype."""
        return {key: self._value(entry) for key, entry in self._layout.items()}

    @property
    def cache(self) -> tuple[torch.Tensor, ...] | None:
        """(keys, values) of the tokens already seen (decode phase), else None."""
        return None if self._cache_buffers is None else self._value(self._cache_buffers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        kwargs = self.kwargs
        cache = self.cache
        if cache is not None:
            kwargs = with_cache(self.attention, _ReadOnlyCache(*cache), **kwargs)
        return self.attention(hidden, **kwargs)[0]


class _ReadOnlyCache:
    """A one-layer KV cache whose ``update`` returns stored + new states without keeping them."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if keys.shape[1] != self.keys.shape[1]:  # the dummy entry of a block without heads
            return keys, values
        return torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)


def causal_mask(hidden: torch.Tensor, *, past: int) -> torch.Tensor:
    """(B, 1, S, past + S) additive causal mask (0 where a query may attend, -inf elsewhere)."""
    batch, seq = hidden.shape[:2]
    allowed = torch.ones(seq, past + seq, dtype=torch.bool).tril(diagonal=past)
    mask = torch.zeros(seq, past + seq, dtype=hidden.dtype).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
    return mask.expand(batch, 1, seq, past + seq).clone()


def _to_device(value: Any, device: str, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device, dtype) for v in value)
    return value


class DecoderAdapter(TransformerAdapter):
    """Shared by the decoder families: causal-LM inputs per phase, captured unit inputs, workloads."""

    causal_lm = True
    architecture = "decoder"

    @property
    def config(self) -> Any:
        """The model's Hugging Face config."""
        return self.model.config

    # ----- family hooks specific to decoders ------------------------------------------------
    def attention_of(self, layer: Any) -> Any:
        raise NotImplementedError

    def mlp_of(self, layer: Any) -> Any:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def backbone(self) -> nn.Module:
        """The transformer without the LM head (what mask tuning runs layer by layer)."""
        raise NotImplementedError

    # ----- inputs and timing ----------------------------------------------------------------
    def example_inputs(self, batch_size: int, seq_len: int, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask), both (batch, seq) int64; random tokens, no padding."""
        limit = int(getattr(self.config, "max_position_embeddings", 1 << 30))
        if seq_len > limit:
            raise UnsupportedModelError(
                f"The 'seq_len' parameter must be <= {limit} for this model (max_position_embeddings). "
                f"Got {seq_len} instead."
            )
        ids = random_tokens(self.vocab_size, batch_size, seq_len, seed=seed)
        return ids, torch.ones_like(ids)

    def forward_module(self) -> nn.Module:
        return self.forward_module_of(self.model)

    def forward_module_of(self, model: nn.Module) -> nn.Module:
        """(input_ids, attention_mask) -> logits (B, S, V) of a (shrunk) copy of this model."""
        return OutputTensor(model, ("input_ids", "attention_mask"))

    def timed(self, model: nn.Module, shape: Shape) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        """The module timed for ``shape`` (prefill, decode step or generate loop) and its inputs."""
        self.example_inputs(shape.batch_size, shape.seq_len + shape.generate_tokens + 1)  # checks the length
        return timed_forward(model, shape, vocab_size=self.vocab_size)

    def _captured(self, shape: Shape, layers: Sequence[int]) -> dict[int, dict[str, Any]]:
        """What these layers' attention and MLP receive in a real forward of this phase: per layer the
        attention's hidden states and keyword arguments, the MLP's input, and (decode) how many
        tokens the layer's KV cache holds (a sliding-window layer keeps at most its window)."""
        seen: dict[int, dict[str, Any]] = {i: {} for i in layers}

        def attention_hook(index: int):  # type: ignore[no-untyped-def]
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                seen[index]["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
                keep = ("position_embeddings", "attention_mask", "position_ids", "cache_position")
                seen[index]["kwargs"] = {k: v for k, v in kwargs.items() if k in keep}

            return hook

        def mlp_hook(index: int):  # type: ignore[no-untyped-def]
            def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
                seen[index]["mlp"] = args[0].detach().clone()

            return hook

        prefill_or_step = Shape(shape.batch_size, shape.seq_len, shape.phase)
        module, inputs = timed_forward(self.model, prefill_or_step, vocab_size=self.vocab_size)
        handles = []
        for index in layers:
            layer = self.layers[index]
            handles.append(self.attention_of(layer).register_forward_pre_hook(attention_hook(index), with_kwargs=True))
            handles.append(self.mlp_of(layer).register_forward_pre_hook(mlp_hook(index)))
        try:
            with torch.inference_mode():
                module(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        cache = getattr(module, "cache", None)
        for index in layers:
            keys = cache.layers[index].keys if cache is not None else None
            seen[index]["cached"] = int(keys.shape[-2]) if keys is not None else 0
        return seen

    def workloads(
        self,
        units: Sequence[Unit],
        shape: Shape,
        *,
        runtime: str,
        device: str,
        dtype: torch.dtype,
    ) -> list[UnitWorkload]:
        if shape.phase not in ("prefill", "decode"):
            raise UnsupportedModelError(f"units are timed per phase (prefill, decode); got {shape.phase!r}")
        first: dict[str, Unit] = {}
        for unit in units:
            first.setdefault(unit.signature, unit)
        seen = self._captured(shape, sorted({int(u.layer or 0) for u in first.values()}))
        out: list[UnitWorkload] = []
        for signature, unit in first.items():
            index = int(unit.layer or 0)
            layer, inputs = self.layers[index], seen[index]
            hidden = inputs["hidden"]
            kwargs = _to_device(inputs["kwargs"], "cpu", hidden.dtype)
            if runtime.startswith("onnxruntime") and kwargs.get("attention_mask") is None:
                # The ONNX exporter has no grouped-query SDPA (taken without a mask): give an explicit one.
                kwargs["attention_mask"] = causal_mask(hidden, past=inputs["cached"])
            for level in unit.levels:
                impl = "dense" if level.index == 0 else "shrunk"
                keep = first_kept(unit, level)
                if unit.kind == "attention":
                    attention = self.pruned_attention(self.attention_of(layer), keep)
                    cache = self._unit_cache(attention, shape, hidden, inputs["cached"])
                    module: nn.Module = AttentionUnit(attention, kwargs, cache)
                    out.append(UnitWorkload(signature, level.index, impl, module, (hidden,)))
                else:
                    mlp = self.pruned_mlp(self.mlp_of(layer), keep)
                    out.append(UnitWorkload(signature, level.index, impl, mlp, (inputs["mlp"],)))
        return out

    def _unit_cache(
        self, attention: nn.Module, shape: Shape, hidden: torch.Tensor, cached: int
    ) -> tuple[torch.Tensor, ...] | None:
        """Random keys and values of the ``cached`` tokens a decode-phase attention unit reads."""
        if shape.phase != "decode" or isinstance(attention, EmptyAttention):
            return None
        heads = self.cached_heads(attention)
        generator = torch.Generator().manual_seed(3)
        size = (shape.batch_size, heads, cached, self.head_size)
        return (
            torch.randn(size, generator=generator, dtype=hidden.dtype),
            torch.randn(size, generator=generator, dtype=hidden.dtype),
        )

    # ----- family hooks for the units ---------------------------------------------------------
    def pruned_attention(self, attention: Any, keep: Sequence[int]) -> nn.Module:
        raise NotImplementedError

    def pruned_mlp(self, mlp: Any, keep: Sequence[int]) -> nn.Module:
        raise NotImplementedError

    def cached_heads(self, attention: Any) -> int:
        """Key/value heads an attention block keeps in the cache."""
        raise NotImplementedError

    def prune_attention(self, layer: Any, keep: Sequence[int]) -> None:
        self.set_attention(layer, self.pruned_attention(self.attention_of(layer), keep))

    def prune_ffn(self, layer: Any, keep: Sequence[int]) -> None:
        self.set_mlp(layer, self.pruned_mlp(self.mlp_of(layer), keep))

    def set_attention(self, layer: Any, module: nn.Module) -> None:
        raise NotImplementedError

    def set_mlp(self, layer: Any, module: nn.Module) -> None:
        raise NotImplementedError


def _backbone_and_prefix(model: nn.Module, attribute: str) -> tuple[Any, str]:
    """The transformer inside a causal LM (``model.model`` / ``model.transformer``) and its path prefix."""
    inner = getattr(model, attribute, None)
    if inner is not None and hasattr(inner, "layers" if attribute == "model" else "h"):
        return inner, f"{attribute}."
    return model, ""


class LlamaAdapter(DecoderAdapter):
    """Llama-family decoders with grouped-query attention and a gated MLP."""

    architecture = "llama"

    def _read_config(self) -> None:
        config = self.config
        model_type = getattr(config, "model_type", "")
        if model_type not in LLAMA_FAMILY:
            raise UnsupportedModelError(
                f"unsupported architecture {model_type!r}; supported decoders: {SUPPORTED_DECODERS}."
            )
        self.inner, self.prefix = _backbone_and_prefix(self.model, "model")
        self.num_heads = int(config.num_attention_heads)
        self.num_groups = int(getattr(config, "num_key_value_heads", None) or self.num_heads)
        self.head_size = int(getattr(config, "head_dim", None) or config.hidden_size // self.num_heads)
        self.intermediate_size = int(config.intermediate_size)
        self.post_norms = hasattr(self.inner.layers[0], "post_feedforward_layernorm")

    @property
    def backbone(self) -> nn.Module:
        return self.inner

    def layers_of(self, model: nn.Module) -> Sequence[Any]:
        inner, _ = _backbone_and_prefix(model, "model")
        return inner.layers

    def unit_names(self, layer: int) -> tuple[str, str]:
        base = f"{self.prefix}layers.{layer}"
        return f"{base}.self_attn", f"{base}.mlp"

    def unit_modules(self, layer: int) -> tuple[dict[str, str], dict[str, str]]:
        attention, mlp = self.unit_names(layer)
        roles = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj"}
        return (
            {role: f"{attention}.{name}" for role, name in roles.items()},
            {role: f"{mlp}.{role}_proj" for role in ("gate", "up", "down")},
        )

    def attention_of(self, layer: Any) -> Any:
        return layer.self_attn

    def mlp_of(self, layer: Any) -> Any:
        return layer.mlp

    def set_attention(self, layer: Any, module: nn.Module) -> None:
        layer.self_attn = module

    def set_mlp(self, layer: Any, module: nn.Module) -> None:
        layer.mlp = module

    def attention_heads(self, layer: Any) -> int:
        return llama_heads(layer.self_attn)

    def attention_groups(self, layer: Any) -> int | None:
        return llama_groups(layer.self_attn)

    def ffn_neurons(self, layer: Any) -> int:
        return gated_mlp_neurons(layer.mlp)

    def layer_skip_refusal(self) -> str | None:
        for layer in self.layers:
            if (
                getattr(layer.self_attn.o_proj, "bias", None) is not None
                or getattr(layer.mlp.down_proj, "bias", None) is not None
            ):
                return "its output projections have biases, so a layer without its blocks still adds them"
        return None

    def skip_identity_layers(self, layers: Any) -> None:
        for i, layer in enumerate(layers):
            if isinstance(layer, SkippedLayer):
                continue
            if is_identity_layer(layer):
                layers[i] = SkippedLayer(layer)
            elif not isinstance(layer, AttentionlessLayer) and is_attentionless_layer(layer):
                layers[i] = AttentionlessLayer(layer)
            elif has_unused_mlp_norm(layer):
                layer.post_attention_layernorm = UnusedNorm(layer.post_attention_layernorm)

    def pruned_attention(self, attention: Any, keep: Sequence[int]) -> nn.Module:
        if isinstance(attention, EmptyAttention) or len(keep) == llama_heads(attention):
            return copy.deepcopy(attention)
        return prune_llama_attention(attention, keep, heads_per_group=self.num_heads // self.num_groups)

    def pruned_mlp(self, mlp: Any, keep: Sequence[int]) -> nn.Module:
        if isinstance(mlp, EmptyMLP) or len(keep) == gated_mlp_neurons(mlp):
            return copy.deepcopy(mlp)
        return prune_gated_mlp(mlp, keep)

    def cached_heads(self, attention: Any) -> int:
        return llama_groups(attention)

    def head_output(self, layer: Any) -> nn.Module:
        return layer.self_attn.o_proj

    def neuron_output(self, layer: Any) -> nn.Module:
        return layer.mlp.down_proj

    def attention_signature(self, layer: int) -> str:
        types = getattr(self.config, "layer_types", None)
        base = self.signatures()[0]
        if not types:
            return base
        window = getattr(self.config, "sliding_window", None) if types[layer] == "sliding_attention" else None
        return f"{base}:layer={types[layer]}" + (f":window={window}" if window else "")

    def signatures(self) -> tuple[str, str]:
        config = self.config
        common = f"D={config.hidden_size}:attn={config._attn_implementation}:type={config.model_type}"
        attention = f"llama-attention:H={self.num_heads}:K={self.num_groups}:d={self.head_size}:{common}"
        act = getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", "")
        mlp = f"llama-mlp:N={self.intermediate_size}:act={act}:{common}"
        return attention, mlp


class GPT2Adapter(DecoderAdapter):
    """GPT-2 (``GPT2LMHeadModel`` / ``GPT2Model``): multi-head attention, biases, Conv1D layers."""

    architecture = "gpt2"

    def layer_skip_refusal(self) -> str | None:
        return "its attention and MLP output projections add biases, so a layer without its blocks still adds them"

    def _read_config(self) -> None:
        config = self.config
        if getattr(config, "model_type", "") != "gpt2":
            raise UnsupportedModelError(
                f"unsupported architecture {config.model_type!r}; supported decoders: {SUPPORTED_DECODERS}."
            )
        self.inner, self.prefix = _backbone_and_prefix(self.model, "transformer")
        self.num_heads = int(config.n_head)
        self.num_groups = self.num_heads
        self.head_size = int(config.n_embd // config.n_head)
        self.intermediate_size = int(config.n_inner or 4 * config.n_embd)
        self.post_norms = False

    @property
    def backbone(self) -> nn.Module:
        return self.inner

    def layers_of(self, model: nn.Module) -> Sequence[Any]:
        inner, _ = _backbone_and_prefix(model, "transformer")
        return inner.h

    def unit_names(self, layer: int) -> tuple[str, str]:
        base = f"{self.prefix}h.{layer}"
        return f"{base}.attn", f"{base}.mlp"

    def unit_modules(self, layer: int) -> tuple[dict[str, str], dict[str, str]]:
        attention, mlp = self.unit_names(layer)
        return (
            {"qkv": f"{attention}.c_attn", "output": f"{attention}.c_proj"},
            {"up": f"{mlp}.c_fc", "down": f"{mlp}.c_proj"},
        )

    def attention_of(self, layer: Any) -> Any:
        return layer.attn

    def mlp_of(self, layer: Any) -> Any:
        return layer.mlp

    def set_attention(self, layer: Any, module: nn.Module) -> None:
        layer.attn = module

    def set_mlp(self, layer: Any, module: nn.Module) -> None:
        layer.mlp = module

    def attention_heads(self, layer: Any) -> int:
        return gpt2_heads(layer.attn)

    def ffn_neurons(self, layer: Any) -> int:
        return gpt2_neurons(layer.mlp)

    def pruned_attention(self, attention: Any, keep: Sequence[int]) -> nn.Module:
        if isinstance(attention, EmptyAttention) or len(keep) == gpt2_heads(attention):
            return copy.deepcopy(attention)
        return prune_gpt2_attention(attention, keep)

    def pruned_mlp(self, mlp: Any, keep: Sequence[int]) -> nn.Module:
        if isinstance(mlp, EmptyMLP) or len(keep) == gpt2_neurons(mlp):
            return copy.deepcopy(mlp)
        return prune_gpt2_mlp(mlp, keep)

    def cached_heads(self, attention: Any) -> int:
        return gpt2_heads(attention)

    def head_output(self, layer: Any) -> nn.Module:
        return layer.attn.c_proj

    def neuron_output(self, layer: Any) -> nn.Module:
        return layer.mlp.c_proj

    def signatures(self) -> tuple[str, str]:
        config = self.config
        common = f"D={config.n_embd}:attn={config._attn_implementation}"
        attention = f"gpt2-attention:H={self.num_heads}:d={self.head_size}:{common}"
        return attention, f"gpt2-mlp:N={self.intermediate_size}:act={config.activation_function}:{common}"


def decoder_adapter(model: nn.Module, *, name: str, ffn_step: int | None = None) -> DecoderAdapter:
    """The adapter for a decoder model (by its config's model type); unsupported ones are refused."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "gpt2":
        return GPT2Adapter(model, name=name, ffn_step=ffn_step)
    if model_type in LLAMA_FAMILY:
        return LlamaAdapter(model, name=name, ffn_step=ffn_step)
    raise UnsupportedModelError(f"unsupported architecture {model_type!r}; supported decoders: {SUPPORTED_DECODERS}.")
