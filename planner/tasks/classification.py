"""Text classification: the model's own head when it has one, else a head fitted on the frozen encoder.

Data: a seeded stratified 80/20 split (test = the held-out 20%), truncated to ``seq_len`` tokens;
calibration examples are a stratified sample of the training split.

- Own head (``*ForSequenceClassification``): its logits are the task output; accuracy is the model
  as given. The data's label names must be the model's ``id2label`` names (a model whose labels are
  the generic ``LABEL_0..`` takes the data's classes in sorted order, or integer labels 0..C-1).
- Bare encoder (the bundled MiniLM): frozen encoder + mean pooling + a logistic-regression head
  fitted on the training split's embeddings (cached on disk).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.models.base import first_tensor
from planner.tasks.base import MetricResult, Tokenized, aggregate
from planner.tasks.data import TextDataset, load_dataset, sample_calibration, split_calibration, stratified_split
from planner.tasks.fitted_head import MeanPoolClassifier, cached_head, mean_pool, tokenize

_GENERIC_LABEL = re.compile(r"^LABEL_(\d+)$")
DEFAULT_CALIBRATION_DOCUMENTS = 256
"""Calibration documents when none are asked for (Fisher, mask tuning, search, final pick)."""
DEFAULT_GUARD_DOCUMENTS = 512
"""Guard documents when none are asked for: at 512, a model that changes no accuracy but answers 4
documents differently is within about 0.8 points (paired 95% upper end), enough for a 1-point limit."""
DEFAULT_SEARCH_DOCUMENTS = 128
"""Calibration documents the search scores candidates on when none are asked for (the rest pick).
Half of the default 256: on MiniLM at 2x SPDY's search with 128 made about half the evaluations of
64 in 60 s, and its picks were better on the test set on every seed (KL 0.058 vs 0.072-0.077; the
plain DP plan 0.070): more examples per candidate beat more candidates (benchmarks/RESULTS.md)."""
BATCH_DOCUMENTS = 32


class TextClassification:
    """Classification of documents (or sentence pairs) into ``classes``.

    Args:
        head: a fitted head applied to the mean-pooled encoder output, or None when the model's own
            head produces the logits.
    """

    name = "text-classification"
    metric = "accuracy"
    search_examples = DEFAULT_SEARCH_DOCUMENTS

    def __init__(
        self,
        *,
        calibration: Tokenized,
        test: Tokenized,
        classes: tuple[str, ...],
        head: nn.Linear | None,
        batch_size: int,
        provenance: Mapping[str, Any],
        training: Tokenized | None = None,
        guard: Tokenized | None = None,
    ) -> None:
        self.calibration = calibration
        self.test = test
        self.training = training if training is not None else calibration.subset(range(0))
        self.guard = guard if guard is not None else calibration.subset(range(0))
        self.classes = classes
        self.head = head
        self.batch_size = batch_size
        self._provenance = dict(provenance)

    def logits(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = model(input_ids=input_ids, attention_mask=attention_mask)
        if self.head is None:
            logits = getattr(output, "logits", None)
            return logits if isinstance(logits, torch.Tensor) else first_tensor(output)
        return self.head(mean_pool(first_tensor(output), attention_mask))

    def task_loss(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        if labels is None:
            raise PlannerError("classification calibration data has no labels; pass labelled data (--data).")
        return F.cross_entropy(self.logits(model, input_ids, attention_mask), labels)

    @torch.inference_mode()
    def reference(self, model: nn.Module, tokens: Tokenized) -> torch.Tensor:
        """(n, classes) log-probabilities of ``model``."""
        model.eval()
        parts = [
            F.log_softmax(self.logits(model, ids, mask), dim=-1) for ids, mask, _ in tokens.batches(self.batch_size)
        ]
        return torch.cat(parts)

    @torch.inference_mode()
    def divergence(self, model: nn.Module, tokens: Tokenized, reference: Any) -> np.ndarray:
        ours = self.reference(model, tokens)
        kl = (reference.exp() * (reference - ours)).sum(dim=-1).clamp(min=0.0)  # rounding can dip below 0
        return kl.double().cpu().numpy()

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, tokens: Tokenized | None = None) -> MetricResult:
        data = self.test if tokens is None else tokens
        model.eval()
        correct = []
        for ids, mask, labels in data.batches(self.batch_size):
            assert labels is not None
            correct.append((self.logits(model, ids, mask).argmax(dim=-1) == labels).double())
        per_example = torch.cat(correct).numpy() if correct else np.zeros(0)
        weights = np.ones_like(per_example)
        return MetricResult("accuracy", aggregate("accuracy", per_example, weights), per_example, weights, True)

    def deployable(self, model: nn.Module) -> nn.Module:
        return model if self.head is None else MeanPoolClassifier(model, self.head).eval()

    def provenance(self) -> Mapping[str, Any]:
        return dict(self._provenance)


def label_mapping(classes: tuple[str, ...], id2label: Mapping[int, str], *, source: str) -> dict[str, int]:
    """Data class name -> the model's output index.

    Raises:
        PlannerError: the data has labels the model does not know (names them and the model's labels).
    """
    names = {int(k): str(v) for k, v in id2label.items()}
    generic = all(_GENERIC_LABEL.match(v) for v in names.values())
    if not generic:
        index = {v: k for k, v in names.items()}
        missing = [c for c in classes if c not in index]
        if missing:
            raise PlannerError(
                f"{source} has labels the model does not know: {missing}; the model's labels (id2label) are "
                f"{sorted(index)}. Rename the data's labels to match."
            )
        return {c: index[c] for c in classes}
    if all(c.isdigit() for c in classes):
        mapping = {c: int(c) for c in classes}
    else:
        mapping = {c: i for i, c in enumerate(classes)}
    too_many = [c for c, i in mapping.items() if i >= len(names)]
    if too_many:
        raise PlannerError(
            f"{source} has {len(classes)} classes but the model's head has {len(names)} outputs; labels {too_many} "
            "have no output. Use data with at most that many classes."
        )
    return mapping


def own_head_labels(model: nn.Module) -> Mapping[int, str] | None:
    """The model's ``id2label`` if it is a sequence classifier with its own head, else None."""
    config = getattr(model, "config", None)
    architectures = list(getattr(config, "architectures", None) or [])
    if not (
        type(model).__name__.endswith("ForSequenceClassification")
        or any(a.endswith("ForSequenceClassification") for a in architectures)
    ):
        return None
    if not hasattr(model, "classifier") and not hasattr(model, "score"):
        return None
    return dict(getattr(config, "id2label", {}) or {})


def build_text_classification(
    loaded: LoadedModel,
    *,
    data: str,
    seq_len: int,
    calibration_size: int | None,
    batch_size: int,
    seed: int,
    cache_dir: Path,
    test_size: int | None = None,
    guard_size: int | None = None,
) -> TextClassification:
    """Split ``data``, tokenize, and set up the head (the model's own, or a fitted one, cached).

    Args:
        calibration_size: calibration documents (None: 256), at most 512.
        test_size: held-out documents the accuracy is measured on (None: the whole 20% split).
        guard_size: guard documents (None: 512, at most half of the training documents outside the
            calibration set), a stratified sample of those documents; recovery trains on the rest.
    """
    wanted = DEFAULT_CALIBRATION_DOCUMENTS if calibration_size is None else calibration_size
    if not 1 <= wanted <= 512:
        raise PlannerError(f"The 'calibration_size' parameter must be in 1..512. Got {wanted} instead.")
    dataset = load_dataset(data)
    train, test = stratified_split(dataset, test_fraction=0.2, seed=seed)
    if test_size is not None and test_size < len(test):
        test = sample_calibration(test, size=test_size, seed=seed)
    tokenizer = loaded.tokenizer()
    labels = own_head_labels(loaded.model)
    if labels is not None:
        mapping = label_mapping(dataset.classes, labels, source=dataset.source)
        train, test = _relabel(train, mapping), _relabel(test, mapping)
    rest, calibration = split_calibration(train, size=wanted, seed=seed)
    default = min(DEFAULT_GUARD_DOCUMENTS, len(rest) // 2)  # recovery keeps at least half of what is left
    rest, guard = carve_guard(rest, size=default if guard_size is None else guard_size, seed=seed)
    head: nn.Linear | None = None
    if labels is None:
        # Fitted without the guard split: a head fitted on it scores the dense model 100% there (96.85%
        # on BBC's test split), so every loss the guard measured was against a memorised baseline.
        fitted_on = calibration.plus(rest)
        head = cached_head(
            loaded.model,
            fitted_on,
            tokenize(tokenizer, fitted_on, seq_len),
            fingerprint=loaded.fingerprint,
            seq_len=seq_len,
            cache_dir=cache_dir,
            seed=seed,
        )
    provenance = {
        "task": TextClassification.name,
        "data": data,
        "data_source": dataset.source,
        "seq_len": seq_len,
        "calibration_size": len(calibration),
        "test_size": len(test),
        "guard_size": len(guard),
        "seed": seed,
        "head": "own" if head is None else "fitted (training split without the guard split)",
        "classes": list(dataset.classes),
    }
    return TextClassification(
        calibration=tokenize(tokenizer, calibration, seq_len),
        test=tokenize(tokenizer, test, seq_len),
        classes=dataset.classes,
        head=head,
        batch_size=max(1, min(BATCH_DOCUMENTS, batch_size)),
        provenance=provenance,
        training=tokenize(tokenizer, rest, seq_len) if len(rest) else None,
        guard=tokenize(tokenizer, guard, seq_len) if len(guard) else None,
    )


def carve_guard(rest: TextDataset, *, size: int, seed: int) -> tuple[TextDataset, TextDataset]:
    """(what recovery may train on, the guard split): a seeded stratified sample of at most ``size``
    of the documents left after calibration (an empty guard when none are left)."""
    if size < 1 or len(rest) == 0:
        return rest, rest.subset(np.arange(0))
    return split_calibration(rest, size=size, seed=seed + 1)


def _relabel(data: TextDataset, mapping: Mapping[str, int]) -> TextDataset:
    labels = np.asarray([mapping[data.classes[i]] for i in data.labels], dtype=np.int64)
    return TextDataset(data.texts, labels, data.classes, data.source, data.pairs)
