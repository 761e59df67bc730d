"""The pruning-backend interface: score units (an error table for the solver), choose which
heads/neurons to keep, and apply a plan for real.

Call order: ``score(adapter, calibration)`` once -> ``ErrorTable``; ``select(scores, unit, level)``
for every chosen structured level (which units to keep, recorded in the plan); later, possibly on
another machine, ``apply(adapter, plan, calibration)`` -> a physically shrunk (or sparsified) model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from planner.classifier import Tokenized
from planner.errors import PlannerError
from planner.plan import Plan


@dataclass(frozen=True)
class Calibration:
    """Calibration data and how to turn the model's output into a task loss.

    Attributes:
        tokens: calibration inputs with labels (n documents).
        forward: ``(input_ids, attention_mask) -> logits`` running the model being pruned (the
            encoder's modules must be the adapter's, so mask hooks reach them).
        batch_size: mini-batch size for gradients and tuning.
    """

    tokens: Tokenized
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.tokens.labels is None:
            raise PlannerError(
                "calibration data has no labels; Fisher pruning needs the task loss: pass labelled data "
                "(--data) or use --backend magnitude."
            )
        if len(self.tokens) == 0:
            raise PlannerError("calibration data is empty; pass at least one labelled example.")


@dataclass(frozen=True)
class ErrorTable:
    """unit x level -> estimated loss, plus per-unit importance for choosing what to keep.

    Attributes:
        units: unit names in table order.
        errors: per unit, (n_levels,) estimated loss of each level (level 0 = dense = 0).
        importance: per structured unit, (units,) importance of each head/neuron (higher = keep).
        method: how errors were estimated (documented per backend).
        extra: backend-specific arrays (e.g. per-batch gradients for rearrangement).
    """

    units: tuple[str, ...]
    errors: tuple[np.ndarray, ...]
    importance: Mapping[str, np.ndarray]
    method: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def unit_errors(self) -> list[np.ndarray]:
        return [e.copy() for e in self.errors]


class Backend(Protocol):
    """A pruning method. See the module docstring for the call order."""

    name: str

    def score(self, adapter: Any, calibration: Calibration | None) -> ErrorTable:
        """Error table for every unit and level of ``adapter.units()``."""
        ...

    def select(self, scores: ErrorTable, unit: str, kept: int) -> tuple[int, ...]:
        """Which heads/neurons (indices) a structured unit keeps at ``kept``."""
        ...

    def apply(self, adapter: Any, plan: Plan, calibration: Calibration | None) -> nn.Module:
        """A pruned copy of the adapter's model following ``plan`` (the original is untouched)."""
        ...


def top_k(importance: np.ndarray, kept: int) -> tuple[int, ...]:
    """Indices of the ``kept`` most important units, sorted ascending."""
    order = np.argsort(-np.asarray(importance), kind="stable")
    return tuple(sorted(int(i) for i in order[:kept]))


def layer_of(unit: str) -> int:
    """Layer index in a BERT unit name ('...encoder.layer.3.attention' -> 3)."""
    return int(unit.split("encoder.layer.")[1].split(".")[0])


def structured_keep(plan: Plan) -> tuple[dict[int, Sequence[int]], dict[int, Sequence[int]]]:
    """(heads, neurons): layer -> kept indices, from a BERT plan's ``keep`` lists."""
    heads: dict[int, Sequence[int]] = {}
    neurons: dict[int, Sequence[int]] = {}
    for choice in plan.units:
        if choice.structure == "dense":
            continue
        if choice.keep is None:
            raise PlannerError(f"plan unit {choice.unit} has no 'keep' list; re-create the plan with `planner plan`.")
        (heads if choice.kind == "attention" else neurons)[layer_of(choice.unit)] = choice.keep
    return heads, neurons


def save_error_table(scores: ErrorTable, path: Any) -> None:
    """Write an error table to ``.npz`` atomically (for resuming runs)."""
    import json

    from profilers.atomic import atomic_path

    arrays: dict[str, Any] = {}
    for i, errors in enumerate(scores.errors):
        arrays[f"errors_{i}"] = errors
    for name, values in scores.importance.items():
        arrays[f"importance::{name}"] = values
    for name, values in scores.extra.items():
        arrays[f"extra::{name}"] = np.asarray(values)
    meta = json.dumps({"units": list(scores.units), "method": scores.method})
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, __meta__=np.array(meta), **arrays)


def load_error_table(path: Any) -> ErrorTable:
    """Read an error table written by ``save_error_table``."""
    import json

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        units = tuple(meta["units"])
        errors = tuple(data[f"errors_{i}"] for i in range(len(units)))
        importance = {k.split("::", 1)[1]: data[k] for k in data.files if k.startswith("importance::")}
        extra = {k.split("::", 1)[1]: data[k] for k in data.files if k.startswith("extra::")}
    return ErrorTable(units, errors, importance, meta["method"], extra)
