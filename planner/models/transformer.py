"""What every transformer family shares: per-layer attention and FFN units, shrinking by unit name,
head/neuron masks, and the shape record a pruned model is rebuilt from.

A family (BERT, Llama-like decoders, GPT-2) subclasses ``TransformerAdapter`` and supplies the
per-layer module access and the physical surgery; everything else (unit lists, validation of keep
lists, masks for Fisher gradients, ``shrink_to_levels``) lives here once.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from planner.errors import UnsupportedModelError
from planner.models.units import (
    Level,
    Unit,
    check_grouped_keep,
    default_ffn_step,
    first_kept,
    grouped_head_levels,
    head_levels,
    neuron_levels,
)


class TransformerAdapter:
    """Units, masks and shrinking for a stack of transformer layers. Subclasses implement the hooks
    marked "family hook" below; the public methods are the model-adapter interface.

    Attributes:
        num_heads: query heads per layer (H), ``num_groups``: key/value groups (K, H for MHA),
        head_size: d, ``intermediate_size``: FFN neurons per layer (N), ``ffn_step``: neuron grid step.
    """

    architecture = "transformer"
    supports_shrinking = True
    """``shrink_to_levels`` builds real models at any levels (used for calibration anchors)."""

    num_heads: int
    num_groups: int
    head_size: int
    intermediate_size: int

    def __init__(self, model: nn.Module, *, name: str, ffn_step: int | None = None) -> None:
        self.model = model.eval()
        self.name = name
        self._read_config()
        self.ffn_step = ffn_step or default_ffn_step(self.intermediate_size)
        if not 1 <= self.ffn_step <= self.intermediate_size:
            raise UnsupportedModelError(
                f"The 'ffn_step' parameter must be in 1..{self.intermediate_size}. Got {self.ffn_step} instead."
            )

    # ----- family hooks ----------------------------------------------------------------------
    def _read_config(self) -> None:
        """Set num_heads, num_groups, head_size, intermediate_size from the model (family hook)."""
        raise NotImplementedError

    def layers_of(self, model: nn.Module) -> Sequence[Any]:
        """The transformer layers of ``model`` (this model or a copy of it) (family hook)."""
        raise NotImplementedError

    def unit_names(self, layer: int) -> tuple[str, str]:
        """(attention unit name, FFN unit name) of a layer, as module paths (family hook)."""
        raise NotImplementedError

    def unit_modules(self, layer: int) -> tuple[dict[str, str], dict[str, str]]:
        """Role -> module path for the attention and FFN weights of a layer (family hook)."""
        raise NotImplementedError

    def attention_heads(self, layer: Any) -> int:
        """Query heads a (possibly pruned) layer has (family hook)."""
        raise NotImplementedError

    def ffn_neurons(self, layer: Any) -> int:
        """FFN neurons a (possibly pruned) layer has (family hook)."""
        raise NotImplementedError

    def prune_attention(self, layer: Any, keep: Sequence[int]) -> None:
        """Keep query heads ``keep`` of ``layer``'s attention, in place on a copy (family hook)."""
        raise NotImplementedError

    def prune_ffn(self, layer: Any, keep: Sequence[int]) -> None:
        """Keep FFN neurons ``keep`` of ``layer``, in place on a copy (family hook)."""
        raise NotImplementedError

    def layer_skip_refusal(self) -> str | None:
        """Why a layer without its blocks is not the identity here (None: it is; family hook)."""
        return (
            "its layers normalise after the residual (post-norm), so a layer without its blocks still changes its input"
        )

    def skip_identity_layers(self, layers: Any) -> None:
        """Replace, in place, layers whose blocks were both emptied and now add nothing by a layer
        that skips its norms too (family hook; post-norm families keep them: their norms still act)."""

    def head_output(self, layer: Any) -> nn.Module:
        """The projection whose input holds the head contexts, H*d wide (family hook)."""
        raise NotImplementedError

    def neuron_output(self, layer: Any) -> nn.Module:
        """The projection whose input holds the FFN activations, N wide (family hook)."""
        raise NotImplementedError

    def signatures(self) -> tuple[str, str]:
        """Shape signatures of the attention and FFN units (family hook)."""
        raise NotImplementedError

    def attention_signature(self, layer: int) -> str:
        """The attention signature of one layer (families whose layers differ, e.g. sliding-window
        and global attention, tell them apart here)."""
        return self.signatures()[0]

    # ----- the adapter interface -------------------------------------------------------------
    @property
    def layers(self) -> Sequence[Any]:
        return self.layers_of(self.model)

    def rebind(self, model: nn.Module) -> TransformerAdapter:
        """The same adapter (name, level grid) over another full-size copy of the model."""
        return type(self)(model, name=self.name, ffn_step=self.ffn_step)

    def attention_levels(self) -> Any:
        if self.num_groups == self.num_heads:
            return head_levels(self.num_heads)
        return grouped_head_levels(self.num_groups, self.num_heads // self.num_groups)

    def units(self) -> tuple[Unit, ...]:
        _, ffn_sig = self.signatures()
        out: list[Unit] = []
        for i, layer in enumerate(self.layers):
            if self.attention_heads(layer) != self.num_heads or self.ffn_neurons(layer) != self.intermediate_size:
                raise UnsupportedModelError(
                    f"layer {i} is already pruned; profile and plan the dense model, then apply the plan."
                )
            att_name, ffn_name = self.unit_names(i)
            att_modules, ffn_modules = self.unit_modules(i)
            groups = self.num_groups
            att_sig = self.attention_signature(i)
            out.append(
                Unit(att_name, "attention", self.attention_levels(), att_sig, self.num_heads, i, groups, att_modules)
            )
            ffn_levels = neuron_levels(self.intermediate_size, self.ffn_step)
            out.append(Unit(ffn_name, "ffn", ffn_levels, ffn_sig, self.intermediate_size, i, None, ffn_modules))
        return tuple(out)

    def check_keep(self, unit: Unit, keep: Sequence[int]) -> list[int]:
        """Sorted, validated indices to keep for ``unit`` (distinct, in range, whole KV groups)."""
        kept = sorted({int(i) for i in keep})
        what = "heads" if unit.kind == "attention" else "neurons"
        if len(kept) != len(list(keep)):
            raise ValueError(f"{unit.name}: {what} to keep contain duplicates: {list(keep)}")
        if kept and (kept[0] < 0 or kept[-1] >= unit.size):
            raise ValueError(f"{unit.name}: {what} to keep must be in 0..{unit.size - 1}; got {kept}")
        if unit.kind == "attention" and unit.groups not in (None, unit.size):
            check_grouped_keep(unit, tuple(kept))
        return kept

    def shrink(self, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        """A physically smaller copy of the model (the original is untouched).

        Args:
            keep: unit name -> indices of the heads (query heads) or neurons to keep; units not
                named keep everything.
        """
        by_name = {u.name: u for u in self.units()}
        unknown = sorted(set(keep) - set(by_name))
        if unknown:
            raise KeyError(f"units not in this model: {unknown}; units: {', '.join(list(by_name)[:4])}...")
        checked = {name: self.check_keep(by_name[name], indices) for name, indices in keep.items()}
        model = copy.deepcopy(self.model)
        layers = self.layers_of(model)
        for name, kept in checked.items():
            unit = by_name[name]
            assert unit.layer is not None
            layer = layers[unit.layer]
            if unit.kind == "attention":
                if len(kept) < unit.size:
                    self.prune_attention(layer, kept)
            elif len(kept) < unit.size:
                self.prune_ffn(layer, kept)
        self.skip_identity_layers(layers)
        return model.eval()

    def shrink_to_levels(self, levels: Mapping[str, int]) -> nn.Module:
        """Shrink keeping the canonical first heads/neurons of each unit at the given level indices.

        Which units are kept does not change latency; this is what profiling and latency checks use.
        """
        by_name = {u.name: u for u in self.units()}
        return self.shrink({name: first_kept(by_name[name], by_name[name].levels[i]) for name, i in levels.items()})

    def attention_groups(self, layer: Any) -> int | None:
        """Key/value groups a (possibly pruned) layer has; None for multi-head attention (family hook)."""
        return None

    def kept_shape(self, model: nn.Module) -> dict[str, dict[str, int | None]]:
        """Unit name -> {"kept": heads / neurons, "groups": KV groups or None} in ``model`` (a shrunk
        copy of this model): what a pruned model is rebuilt from."""
        out: dict[str, dict[str, int | None]] = {}
        for i, layer in enumerate(self.layers_of(model)):
            att, ffn = self.unit_names(i)
            out[att] = {"kept": self.attention_heads(layer), "groups": self.attention_groups(layer)}
            out[ffn] = {"kept": self.ffn_neurons(layer), "groups": None}
        return out

    def shrink_to_shape(self, shape: Mapping[str, Mapping[str, int | None]]) -> nn.Module:
        """A copy shrunk to ``kept_shape``'s record (the first heads / neurons of each unit)."""
        by_name = {u.name: u for u in self.units()}
        keep = {}
        for name, entry in shape.items():
            if name not in by_name:
                raise KeyError(f"unit {name!r} is not in this model")
            level = Level(0, "heads", kept=int(entry["kept"] or 0), groups=entry.get("groups"))
            keep[name] = first_kept(by_name[name], level)
        return self.shrink(keep)

    @contextlib.contextmanager
    def masked(self, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Scale heads / neurons while the block runs (hooks always removed).

        A head mask value scales that head's context (its block of the output projection's input
        columns); a neuron mask value scales its activation (the down projection's input column).
        Masks may require grad (Fisher scores are gradients with respect to them).

        Args:
            masks: unit name -> (H,) per query head or (N,) per neuron; units not named are untouched.
        """
        by_name = {u.name: u for u in self.units()}
        handles = []
        try:
            for name, mask in masks.items():
                unit = by_name[name]
                assert unit.layer is not None
                layer = self.layers[unit.layer]
                if unit.kind == "attention":
                    target, repeat = self.head_output(layer), self.head_size
                else:
                    target, repeat = self.neuron_output(layer), 1
                handles.append(target.register_forward_pre_hook(_scale_input(mask, repeat)))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _scale_input(mask: torch.Tensor, repeat: int):  # type: ignore[no-untyped-def]
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        scale = mask.repeat_interleave(repeat) if repeat > 1 else mask
        return (args[0] * scale.to(args[0].dtype), *args[1:])

    return hook


def rows(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A new Linear keeping output rows ``index`` (shape: (len(index), in))."""
    out = nn.Linear(linear.in_features, len(index), bias=linear.bias is not None)
    out = out.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[index])
    return out


def columns(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A new Linear keeping input columns ``index`` (shape: (out, len(index)))."""
    out = nn.Linear(len(index), linear.out_features, bias=linear.bias is not None)
    out = out.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight[:, index])
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def head_columns(heads: Sequence[int], head_size: int, device: torch.device) -> torch.Tensor:
    """Indices of the features of ``heads`` in a (H*d)-wide projection: (len(heads) * d,)."""
    if not heads:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads]).to(device)
