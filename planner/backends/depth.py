"""Depth pruning as practitioners do it without a planner (ShortGPT, Men et al. 2024): remove the
layers whose output is most similar to their input.

- score: Block Influence of every layer on the calibration data (1 - cosine of its input and output
  hidden states, averaged over real tokens), kept as ``extra["influence"]``, (L,); per-unit errors
  and importance are magnitude's (only used if another solver is run on this table);
- the allocation (``planner.stages.solve``, solver "depth") removes layers least influential first
  until the plan fits the budget: a removed layer is its attention and MLP at 0 kept, which the
  model skips whole (norms too; ``SkippedLayer``);
- apply: physical shrinking, no tuning.

Only families whose emptied layers are the identity qualify (pre-norm, no output biases):
``refusal`` says why another one does not.
"""

from __future__ import annotations

from typing import Any

from planner.backends.activations import block_influence
from planner.backends.magnitude import MagnitudeBackend
from planner.errors import PlannerError
from planner.records.error_table import ErrorTable
from planner.tasks.base import Task

INFLUENCE = "influence"
"""``ErrorTable.extra`` key of the (L,) Block Influence."""


def refusal(adapter: Any) -> str | None:
    """Why the model's layers cannot be removed whole (None: they can)."""
    why = getattr(adapter, "layer_skip_refusal", lambda: "its family has no skippable layers")()
    if why is None:
        return None
    return (
        f"--methods depth removes whole layers, but {adapter.name}'s cannot be skipped: {why}. "
        "Use depth with a Llama-family decoder (pre-norm, no output biases), or leave depth out of --methods."
    )


class DepthBackend(MagnitudeBackend):
    """Block Influence scores; magnitude's selection and plain shrinking (see the module docstring)."""

    name = "depth"

    @property
    def needs_task(self) -> bool:
        return True

    def score(self, adapter: Any, task: Task | None = None) -> ErrorTable:
        why = refusal(adapter)
        if why is not None:
            raise PlannerError(why)
        if task is None:
            raise PlannerError("depth scores need calibration data (a task).")
        influence = block_influence(task, adapter.model, list(adapter.layers))
        base = super().score(adapter)
        return ErrorTable(
            base.units,
            base.errors,
            base.importance,
            "depth: Block Influence per layer (1 - cosine of input and output); whole layers removed",
            extra={INFLUENCE: influence},
        )
