"""The search's loss: build the model at candidate levels and measure its loss on calibration data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from planner.backends.base import Backend
from planner.records.error_table import ErrorTable
from planner.stages.search.builder import CandidateBuilder
from planner.stages.search.references import dense_reference
from planner.tasks.base import Task, Tokenized


@dataclass
class LossClock:
    """Where a search's evaluation time goes: building candidates vs their forward passes (s)."""

    evaluations: int = 0
    build_seconds: float = 0.0
    forward_seconds: float = 0.0
    examples: int = 0

    def as_dict(self) -> dict[str, float]:
        total = self.build_seconds + self.forward_seconds
        return {
            "evaluations": self.evaluations,
            "examples": self.examples,
            "build_seconds": round(self.build_seconds, 3),
            "forward_seconds": round(self.forward_seconds, 3),
            "build_share": round(self.build_seconds / total, 4) if total > 0 else 0.0,
        }


class CandidateLoss:
    """``levels -> loss`` of the physically shrunk model on calibration examples.

    objective "kl": mean KL divergence of the model's output distribution from the dense model's
    (the task's ``divergence``; smooth, and needs no labels); "ce": the task loss with the true
    targets. Which heads/neurons a level keeps comes from the backend (Fisher: rearranged), cached
    per (unit, level); the builder may compensate (``planner.stages.search.scoring``). No mask tuning
    here (that happens once, when the final plan is applied).
    Candidates come from a ``CandidateBuilder`` (shrunk layers reused across candidates); ``on``
    gives the same loss on other examples, sharing those caches and the ``clock``.
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
        builder: CandidateBuilder | None = None,
        keep_cache: dict[tuple[str, int], tuple[int, ...]] | None = None,
        clock: LossClock | None = None,
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
        self.builder = builder or CandidateBuilder(adapter)
        self.clock = clock or LossClock()
        self._keep = keep_cache if keep_cache is not None else {}
        self._reference = dense_reference(task, adapter.model, tokens) if objective == "kl" else None

    def on(self, tokens: Tokenized) -> CandidateLoss:
        """The same loss on ``tokens`` (its own dense reference), sharing the caches and the clock."""
        return CandidateLoss(
            adapter=self.adapter,
            task=self.task,
            backend=self.backend,
            scores=self.scores,
            tokens=tokens,
            objective=self.objective,
            builder=self.builder,
            keep_cache=self._keep,
            clock=self.clock,
        )

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
        return self.builder.model(keep)

    def per_example(self, levels: Sequence[int]) -> np.ndarray:
        """(n,) loss of each calibration example for the model at ``levels``."""
        started = time.perf_counter()
        model = self.model(levels)
        built = time.perf_counter()
        if self.objective == "kl":
            out = self.task.divergence(model, self.tokens, self._reference)
        else:
            losses = []
            with torch.inference_mode():
                for ids, mask, labels in self.tokens.batches(self.task.batch_size):
                    losses.append(float(self.task.task_loss(model, ids, mask, labels)) * np.ones(ids.shape[0]))
            out = np.concatenate(losses)
        self.clock.evaluations += 1
        self.clock.examples += len(self.tokens)
        self.clock.build_seconds += built - started
        self.clock.forward_seconds += time.perf_counter() - built
        return out

    def __call__(self, levels: Sequence[int]) -> float:
        return float(np.mean(self.per_example(levels)))
