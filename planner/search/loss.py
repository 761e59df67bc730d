"""The search's loss: build the model at candidate levels and measure its loss on calibration data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from planner.backends.base import Backend
from planner.records.error_table import ErrorTable
from planner.tasks.base import Task, Tokenized


class CandidateLoss:
    """``levels -> loss`` of the physically shrunk model on calibration examples.

    objective "kl": mean KL divergence of the model's output distribution from the dense model's
    (the task's ``divergence``; smooth, and needs no labels); "ce": the task loss with the true
    targets. Which heads/neurons a level keeps comes from the backend (Fisher: rearranged), cached
    per (unit, level). No mask tuning here (that happens once, when the final plan is applied).
    """

    def __init__(
        self,
        *,
        adapter: Any,
        task: Task,
        backend: Backend,
        scores: ErrorTable,
        tokens: Tokenized,
        objective: str = "kl",
    ) -> None:
        if objective not in ("ce", "kl"):
            raise ValueError(f"The 'objective' parameter must be one of kl, ce. Got {objective!r} instead.")
        self.objective = objective
        self.adapter = adapter
        self.task = task
        self.backend = backend
        self.scores = scores
        self.tokens = tokens
        self.units = adapter.units()
        self._keep: dict[tuple[str, int], tuple[int, ...]] = {}
        self._reference = task.reference(adapter.model, tokens) if objective == "kl" else None

    @property
    def examples(self) -> int:
        return len(self.tokens)

    def keep(self, unit_index: int, level: int) -> tuple[int, ...]:
        unit = self.units[unit_index]
        key = (unit.name, level)
        if key not in self._keep:
            self._keep[key] = self.backend.select(self.scores, unit, unit.levels[level])
        return self._keep[key]

    def model(self, levels: Sequence[int]) -> torch.nn.Module:
        """The shrunk model at ``levels`` (one level index per unit)."""
        keep = {self.units[i].name: self.keep(i, level) for i, level in enumerate(levels) if level != 0}
        return self.adapter.shrink(keep)

    def per_example(self, levels: Sequence[int]) -> np.ndarray:
        """(n,) loss of each calibration example for the model at ``levels``."""
        model = self.model(levels)
        if self.objective == "kl":
            return self.task.divergence(model, self.tokens, self._reference)
        losses = []
        with torch.inference_mode():
            for ids, mask, labels in self.tokens.batches(self.task.batch_size):
                losses.append(float(self.task.task_loss(model, ids, mask, labels)) * np.ones(ids.shape[0]))
        return np.concatenate(losses)

    def __call__(self, levels: Sequence[int]) -> float:
        return float(np.mean(self.per_example(levels)))
