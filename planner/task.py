"""The classification task a model is pruned for: data split, calibration set, model with a head.

For the bundled default: BBC News (seeded stratified 80/20 split, truncated to ``seq_len``) and
all-MiniLM-L6-v2 with mean pooling and a logistic-regression head fitted on the frozen encoder's
training embeddings (cached on disk, keyed by the encoder's fingerprint and the data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.backends.base import Calibration
from planner.classifier import MeanPoolClassifier, Tokenized, cached_head, tokenize
from planner.data import TextDataset, load_dataset, sample_calibration, stratified_split
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.models.bert import find_bert

DEFAULT_CACHE = Path(os.environ.get("PLANNER_CACHE", Path.home() / ".cache" / "latency-planner"))


@dataclass(frozen=True)
class Task:
    """Everything needed to score, tune and evaluate a pruned classifier."""

    train: TextDataset
    test: TextDataset
    calibration: Calibration
    test_tokens: Tokenized
    classifier: MeanPoolClassifier
    tokenizer: Any

    def with_encoder(self, encoder: nn.Module) -> nn.Module:
        """The task's classifier with another (e.g. pruned) encoder; the head is shared."""
        return MeanPoolClassifier(encoder, self.classifier.head).eval()


def load_tokenizer(loaded: LoadedModel) -> Any:
    """The tokenizer saved with the model (bundled or Hugging Face folder)."""
    if loaded.source is None:
        raise PlannerError(
            f"{loaded.spec!r} has no tokenizer (factory models): text data cannot be tokenized for it; use "
            "--backend magnitude, or a Hugging Face model folder with its tokenizer."
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(loaded.source), local_files_only=True)


def build_task(
    loaded: LoadedModel,
    *,
    data: str = "bbc",
    seq_len: int = 128,
    calibration_size: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Task:
    """Split ``data``, fit (or load) the head, and tokenize calibration and test sets."""
    if not 1 <= calibration_size <= 512:
        raise PlannerError(f"The 'calibration_size' parameter must be in 1..512. Got {calibration_size} instead.")
    if loaded.adapter.architecture != "bert":
        raise PlannerError("text-classification tasks need a BERT-family model with a tokenizer.")
    dataset = load_dataset(data)
    train, test = stratified_split(dataset, test_fraction=0.2, seed=seed)
    tokenizer = load_tokenizer(loaded)
    encoder = find_bert(loaded.model)[0]
    train_tokens = tokenize(tokenizer, train, seq_len)
    head = cached_head(
        encoder,
        train,
        train_tokens,
        fingerprint=loaded.fingerprint,
        seq_len=seq_len,
        cache_dir=cache_dir or DEFAULT_CACHE,
        seed=seed,
    )
    classifier = MeanPoolClassifier(encoder, head).eval()
    calib = sample_calibration(train, size=calibration_size, seed=seed)
    calibration = Calibration(tokenize(tokenizer, calib, seq_len), _forward(classifier), batch_size)
    return Task(train, test, calibration, tokenize(tokenizer, test, seq_len), classifier, tokenizer)


def _forward(model: nn.Module):  # type: ignore[no-untyped-def]
    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(input_ids, attention_mask)
        return out

    return forward
