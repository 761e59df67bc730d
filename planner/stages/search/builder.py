"""Shrunk candidate models for the search, assembled from cached shrunk layers.

``TransformerAdapter.shrink`` deep-copies the whole model, which for a 135M-parameter decoder costs
about as much as scoring a candidate on a few windows. A search builds thousands of candidates that
differ in a few layers, so here a candidate is a copy of the model's module *shells* that shares every
tensor with the dense model, except the layers it shrinks; each shrunk layer is built once per
(layer, heads kept, neurons kept) and reused by later candidates (least recently used ones are
dropped past ``max_layers``). Candidates are read-only: evaluate them, never train or modify them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

LayerKey = tuple[int, tuple[int, ...] | None, tuple[int, ...] | None]
"""(layer index, query heads kept or None for all, neurons kept or None for all)."""


class CandidateBuilder:
    """``model(keep)`` gives the same model as ``adapter.shrink(keep)``, sharing unchanged tensors.

    Args:
        adapter: a ``TransformerAdapter`` over the dense model.
        max_layers: shrunk layers kept for reuse (default: 4 per model layer).
    """

    def __init__(self, adapter: Any, *, max_layers: int | None = None) -> None:
        self.adapter = adapter
        self.layers: Sequence[Any] = adapter.layers_of(adapter.model)
        self.max_layers = max_layers if max_layers is not None else 4 * len(self.layers)
        units = adapter.units()
        self._unit_of = {u.name: u for u in units}
        self._sizes = {u.name: u.size for u in units}
        self._cache: OrderedDict[LayerKey, nn.Module] = OrderedDict()
        self.built = 0
        """Shrunk layers built so far (cache misses)."""

    def _layer(self, key: LayerKey) -> nn.Module:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        index, heads, neurons = key
        layer = copy.deepcopy(self.layers[index])
        if heads is not None:
            self.adapter.prune_attention(layer, list(heads))
        if neurons is not None:
            self.adapter.prune_ffn(layer, list(neurons))
        self.built += 1
        self._cache[key] = layer.eval()
        while len(self._cache) > self.max_layers:
            self._cache.popitem(last=False)
        return layer

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
