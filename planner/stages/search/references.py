"""The dense model's reference outputs on calibration examples, computed once per model, task and examples.

Every search scores its candidates against the dense model's outputs on the same examples (the search
sample, the final pick's); ``planner sweep`` runs one search per method, target and re-plan, and
``planner run`` one per correction. Recomputing them took 70% of a SmolLM2 sweep's search time
(py-spy, decode b1 s512: the dense forward over the windows plus a log-softmax and top-k over a
49,152-token vocabulary). Entries are kept while the model lives (weakly keyed), and recomputed when
the model's weights were changed in place since (their version counters).
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import nn

from planner.tasks.base import Task, Tokenized

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[Task, tuple[int, ...], Any]]] = weakref.WeakKeyDictionary()


def _versions(model: nn.Module) -> tuple[int, ...]:
    """In-place change counters of every parameter and buffer (an in-place edit bumps one)."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))


def dense_reference(task: Task, model: nn.Module, tokens: Tokenized) -> Any:
    """``task.reference(model, tokens)``, from the cache when this model (unchanged since), this task
    object and these examples were seen before."""
    entries = _CACHE.setdefault(model, {})
    key = f"{tokens.input_ids.device}:{tokens.digest()}"  # which examples, on which device
    versions = _versions(model)
    hit = entries.get(key)
    if hit is not None and hit[0] is task and hit[1] == versions:
        return hit[2]
    reference = task.reference(model, tokens)
    entries[key] = (task, versions, reference)
    return reference


def clear() -> None:
    """Forget every cached reference (tests; memory)."""
    _CACHE.clear()


__all__ = ["clear", "dense_reference"]
