"""The task interface: what the planner needs from "the job the model does".

A task owns its data (calibration examples from the training split, held-out test examples) and
three ways of judging a model, all on the *adapter's* model (the one backends shrink):

- ``task_loss``: the differentiable loss with the true targets (labels, next tokens): Fisher scores
  are its gradients with respect to head and neuron masks (a loss against the dense model itself
  would have zero gradient there);
- ``divergence``: KL of the model's output distribution from the dense model's (``reference``),
  per example: the search's and the final pick's loss;
- ``evaluate``: the held-out metric for the report (accuracy, perplexity), with per-example values
  so differences between models get bootstrap intervals.

Call order: build the task (``planner.tasks.build_task``); ``reference(dense, tokens)`` once per
token set; then ``divergence`` / ``evaluate`` for any number of candidate models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Tokenized:
    """Token ids and attention masks, both (n, seq_len) int64, plus labels (n,) int64 (or None)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(input_ids, attention_mask, labels) slices of at most ``batch_size`` rows, in order."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            labels = None if self.labels is None else self.labels[start:stop]
            yield self.input_ids[start:stop], self.attention_mask[start:stop], labels

    def to(self, device: str | torch.device) -> Tokenized:
        """The same examples on ``device`` (itself when already there)."""
        if self.input_ids.device == torch.device(device):
            return self
        labels = None if self.labels is None else self.labels.to(device)
        return Tokenized(self.input_ids.to(device), self.attention_mask.to(device), labels)

    def subset(self, index: np.ndarray | list[int] | range) -> Tokenized:
        idx = torch.as_tensor(np.asarray(list(index) if isinstance(index, range) else index, dtype=np.int64))
        labels = None if self.labels is None else self.labels[idx]
        return Tokenized(self.input_ids[idx], self.attention_mask[idx], labels)

    @property
    def tokens(self) -> int:
        """Non-padding tokens in the set."""
        return int(self.attention_mask.sum())

    def digest(self) -> str:
        """A short hash of the examples: token ids, masks and labels, with their shapes (not the device)."""
        digest = hashlib.sha256()
        for tensor in (self.input_ids, self.attention_mask, self.labels):
            if tensor is not None:
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class MetricResult:
    """A held-out metric of one model.

    Attributes:
        name: "accuracy" or "perplexity".
        value: the metric over all examples (accuracy in [0, 1]; perplexity >= 1).
        per_example: (n,) the per-example quantity the metric aggregates: 1/0 correctness for
            accuracy, summed negative log-likelihood (nats) per window for perplexity.
        weights: (n,) what each example counts for: 1 per document, or predicted tokens per window.
        higher_is_better: True for accuracy, False for perplexity.
    """

    name: str
    value: float
    per_example: np.ndarray
    weights: np.ndarray
    higher_is_better: bool

    @property
    def examples(self) -> int:
        return int(self.per_example.size)

    @property
    def tokens(self) -> int:
        return int(self.weights.sum())


def aggregate(name: str, per_example: np.ndarray, weights: np.ndarray) -> float:
    """The metric from per-example values (also for bootstrap resamples): accuracy = weighted mean of
    correctness; perplexity = exp(total NLL / total tokens)."""
    if name == "perplexity":
        return float(np.exp(per_example.sum() / max(float(weights.sum()), 1.0)))
    return float((per_example * weights).sum() / max(float(weights.sum()), 1.0))


class Task(Protocol):
    """What the planner needs from a task. See the module docstring for the call order."""

    name: str
    metric: str
    calibration: Tokenized
    test: Tokenized
    training: Tokenized
    """What recovery may train on: the training split minus every calibration and guard example (never test)."""
    guard: Tokenized
    """The guard split: training-split examples that no stage scores, tunes, searches, picks or trains on
    (disjoint from calibration, training and test); the quality limit is checked on them."""
    batch_size: int
    search_examples: int
    """Calibration examples the search scores on by default (the rest are for the final pick)."""

    def logits(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The task's output logits of the adapter's ``model``: (B, classes) or (B, S, vocab)."""
        ...

    def task_loss(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean loss with the true targets (differentiable; a scalar)."""
        ...

    def reference(self, model: nn.Module, tokens: Tokenized) -> Any:
        """What ``divergence`` compares against: the dense model's outputs on ``tokens``."""
        ...

    def divergence(self, model: nn.Module, tokens: Tokenized, reference: Any) -> np.ndarray:
        """(n,) KL divergence of ``model``'s output distribution from the reference's, per example."""
        ...

    def evaluate(self, model: nn.Module, tokens: Tokenized | None = None) -> MetricResult:
        """The held-out metric on ``tokens`` (default: the test set)."""
        ...

    def deployable(self, model: nn.Module) -> nn.Module:
        """The module a user deploys for this task (the model plus a fitted head, if any)."""
        ...

    def provenance(self) -> Mapping[str, Any]:
        """What the task's data depends on (data spec, sizes, seq_len, seed), for records and caches."""
        ...
