"""A classification head for a bare encoder: frozen encoder, mean pooling, a fitted linear head.

The head is fitted on the frozen encoder's embeddings of the training split (multinomial logistic
regression, scikit-learn) and cached on disk, keyed by the encoder's fingerprint, the data and the
sequence length, so a second run skips the embedding pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.tasks.base import Tokenized
from planner.tasks.data import TextDataset
from profilers.atomic import atomic_path


def tokenize(tokenizer: Any, data: TextDataset, seq_len: int) -> Tokenized:
    """Tokenize documents (and their pairs, for sentence-pair data), truncated and padded to ``seq_len``."""
    pairs = None if data.pairs is None else list(data.pairs)
    encoded = tokenizer(
        list(data.texts), pairs, max_length=seq_len, truncation=True, padding="max_length", return_tensors="pt"
    )
    return Tokenized(
        encoded["input_ids"].to(torch.int64),
        encoded["attention_mask"].to(torch.int64),
        torch.as_tensor(data.labels, dtype=torch.int64),
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors over non-padding positions: (B, S, D), (B, S) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MeanPoolClassifier(nn.Module):
    """encoder -> mean pooling -> linear head: (input_ids, attention_mask) -> logits (B, classes)."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head: nn.Linear = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.head(mean_pool(hidden, attention_mask))


@torch.inference_mode()
def embed(encoder: nn.Module, tokens: Tokenized, *, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled embeddings (n, D) of the frozen encoder, float32."""
    encoder.eval()
    out = [
        mean_pool(encoder(input_ids=ids, attention_mask=mask)[0], mask) for ids, mask, _ in tokens.batches(batch_size)
    ]
    return torch.cat(out).float().numpy()


def fit_head(embeddings: np.ndarray, labels: np.ndarray, *, classes: int, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression on embeddings (n, D) -> a ``nn.Linear(D, classes)``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    model.fit(embeddings, labels)
    head = nn.Linear(embeddings.shape[1], classes)
    with torch.no_grad():
        weight = np.zeros((classes, embeddings.shape[1]), dtype=np.float32)
        bias = np.zeros(classes, dtype=np.float32)
        weight[model.classes_] = model.coef_
        bias[model.classes_] = model.intercept_
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def head_cache_key(*, fingerprint: str, data: TextDataset, seq_len: int, seed: int) -> str:
    """Hash of what the head depends on: encoder weights, documents, labels, seq_len, seed."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"fp": fingerprint, "seq": seq_len, "seed": seed, "classes": data.classes}).encode())
    for text in data.texts:
        digest.update(hashlib.sha1(text.encode()).digest())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:20]


def cached_head(
    encoder: nn.Module,
    train: TextDataset,
    tokens: Tokenized,
    *,
    fingerprint: str,
    seq_len: int,
    cache_dir: Path,
    seed: int = 0,
) -> nn.Linear:
    """Fit (or load from ``cache_dir``) the classification head for ``encoder`` on ``train``."""
    from safetensors.torch import load_file, save_file

    key = head_cache_key(fingerprint=fingerprint, data=train, seq_len=seq_len, seed=seed)
    path = cache_dir / f"head-{key}.safetensors"
    classes = len(train.classes)
    if path.is_file():
        state = load_file(str(path))
        head = nn.Linear(state["weight"].shape[1], classes)
        head.load_state_dict(state)
        return head
    labels = tokens.labels
    assert labels is not None
    head = fit_head(embed(encoder, tokens), labels.numpy(), classes=classes, seed=seed)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    return head
