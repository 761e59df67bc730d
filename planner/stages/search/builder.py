"""Shrunk candidate models for the search, assembled from cached shrunk layers.

``TransformerAdapter.shrink`` deep-copies the whole model, which for a 135M-parameter decoder costs
about as much as scoring a candidate on a few windows. A search builds thousands of candidates that
differ in a few layers, so here a candidate is a copy of the model's module *shells* that shares every
tensor with the dense model, except the layers it shrinks; each shrunk layer is built once per
(layer, heads kept, neurons kept) and reused by later candidates (least recently used ones are
dropped past ``max_layers``). Candidates are read-only: evaluate them, never train or modify them.

With ``means`` a shrunk layer's output projections also gain FLAP's bias compensation before they are
cut, as ``planner.backends.compensation.compensated_shrink`` does for the whole model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from planner.backends.compensation import compensate

LayerKey = tuple[int, tuple[int, ...] | None, tuple[int, ...] | None]
"""(layer index, query heads kept or None for all, neurons kept or None for all)."""


class CandidateBuilder:
    """``model(keep)`` gives the same model as ``adapter.shrink(keep)``, sharing unchanged tensors.

    Args:
        adapter: a ``TransformerAdapter`` over the dense model.
        max_layers: shrunk layers kept for reuse (default: 4 per model layer).
        means: unit name -> (in,) the dense mean input of its output projection: shrunk layers are
            compensated (``adapter.shrink`` then differs by those biases); None: plain shrinking.
    """

    def __init__(
        self, adapter: Any, *, max_layers: int | None = None, means: Mapping[str, np.ndarray] | None = None
    ) -> None:
        self.adapter = adapter
        self.means = means
        self.layers: Sequence[Any] = adapter.layers_of(adapter.model)
        self.max_layers = max_layers if max_layers is not None else 4 * len(self.layers)
        units = adapter.units()
        self._unit_of = {u.name: u for u in units}
        self._sizes = {u.name: u.size for u in units}
        self._at = {(int(u.layer), u.kind): u for u in units if u.kind in ("attention", "ffn")}
        self._cache: OrderedDict[LayerKey, nn.Module] = OrderedDict()
        self.built = 0
        """Shrunk layers built so far (cache misses)."""

    def _layer(self, key: LayerKey) -> nn.Module:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        index, heads, neurons = key
        layer = copy.deepcopy(self.layers[index])
        if self.means is not None:
            self._compensate(layer, index, heads, neurons)
        if heads is not None:
            self.adapter.prune_attention(layer, list(heads))
        if neurons is not None:
            self.adapter.prune_ffn(layer, list(neurons))
        self.built += 1
        self._cache[key] = layer.eval()
        while len(self._cache) > self.max_layers:
            self._cache.popitem(last=False)
        return layer

    def _compensate(
        self, layer: nn.Module, index: int, heads: tuple[int, ...] | None, neurons: tuple[int, ...] | None
    ) -> None:
        assert self.means is not None
        for kind, kept in (("attention", heads), ("ffn", neurons)):
            if kept is None:
                continue
            unit = self._at[(index, kind)]
            module = self.adapter.head_output(layer) if kind == "attention" else self.adapter.neuron_output(layer)
            compensate(module, self.adapter, unit, kept, self.means[unit.name])

    def layer_keys(self, keep: Mapping[str, Sequence[int]]) -> dict[int, LayerKey]:
        """Layer index -> cache key of every layer ``keep`` shrinks (units keeping everything are skipped)."""
        changed: dict[int, list[tuple[int, ...] | None]] = {}
        for name, indices in keep.items():
            unit = self._unit_of.get(name)
            if unit is None:
                raise KeyError(f"unit {name!r} is not in this model")
            kept = tuple(self.adapter.check_keep(unit, indices))
            if len(kept) == unit.size:
                continue
            slots = changed.setdefault(int(unit.layer), [None, None])
            slots[0 if unit.kind == "attention" else 1] = kept
        return {i: (i, slots[0], slots[1]) for i, slots in changed.items()}

    def model(self, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        """The candidate keeping ``keep`` (unit name -> head / neuron indices; others keep all)."""
        dense = self.adapter.model
        # deepcopy consults the memo first: tensors and unchanged layers map to themselves (shared),
        # shrunk layers to their cached copies; only the module shells are new.
        memo: dict[int, Any] = {id(t): t for t in dense.parameters()}
        memo.update({id(t): t for t in dense.buffers()})
        shrunk = {i: self._layer(key) for i, key in self.layer_keys(keep).items()}
        for i, layer in enumerate(self.layers):
            memo[id(layer)] = shrunk.get(i, layer)
        return copy.deepcopy(dense, memo).eval()
