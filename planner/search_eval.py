"""The local search's loss: build the model at candidate levels and measure its calibration loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from planner.backends.base import Backend, ErrorTable, layer_of
from planner.classifier import MeanPoolClassifier, Tokenized
from planner.models.bert import find_bert


class CalibrationLoss:
    """``levels -> loss`` of the physically shrunk classifier on calibration data.

    objective "ce": mean cross-entropy with the labels; "kl": mean KL divergence from the dense
    model's predicted distribution (a smoother signal on training documents the head already fits).
    Which heads/neurons a level keeps comes from the backend (Fisher: rearranged), cached per
    (unit, kept). No mask tuning here (that happens once, when the final plan is applied).
    """

    def __init__(
        self,
        *,
        adapter: Any,
        head: torch.nn.Linear,
        backend: Backend,
        scores: ErrorTable,
        tokens: Tokenized,
        batch_size: int = 32,
        objective: str = "kl",
    ) -> None:
        if objective not in ("ce", "kl"):
            raise ValueError(f"unknown search objective {objective!r}; available: ce, kl")
        self.objective = objective
        self.adapter = adapter
        self.head = head
        self.backend = backend
        self.scores = scores
        self.tokens = tokens
        self.batch_size = batch_size
        self.units = adapter.units()
        self._keep: dict[tuple[str, int], tuple[int, ...]] = {}
        self._dense: list[torch.Tensor] = []
        if objective == "kl":
            dense = MeanPoolClassifier(find_bert(adapter.model)[0], head).eval()
            with torch.inference_mode():
                self._dense = [F.log_softmax(dense(ids, mask), dim=-1) for ids, mask, _ in tokens.batches(batch_size)]

    def keep(self, unit: str, kept: int) -> tuple[int, ...]:
        key = (unit, kept)
        if key not in self._keep:
            self._keep[key] = self.backend.select(self.scores, unit, kept)
        return self._keep[key]

    @torch.inference_mode()
    def __call__(self, levels: Sequence[int]) -> float:
        heads: dict[int, tuple[int, ...]] = {}
        neurons: dict[int, tuple[int, ...]] = {}
        for unit, level in zip(self.units, levels, strict=True):
            if level == 0:
                continue
            kept = int(unit.levels[level].kept)
            (heads if unit.kind == "attention" else neurons)[layer_of(unit.name)] = self.keep(unit.name, kept)
        shrunk = self.adapter.shrink(heads, neurons)
        model = MeanPoolClassifier(find_bert(shrunk)[0], self.head).eval()
        total, count = 0.0, 0
        for index, (ids, mask, labels) in enumerate(self.tokens.batches(self.batch_size)):
            logits = model(ids, mask)
            if self.objective == "kl":
                reference = self._dense[index]
                log_probs = F.log_softmax(logits, dim=-1)
                total += float((reference.exp() * (reference - log_probs)).sum())
            else:
                assert labels is not None
                total += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += int(ids.shape[0])
        return total / max(1, count)
