"""Causal language modelling: keep predicting the next token as the dense model does.

Data: plain-text documents (``tasks.data.load_documents``) split 80/20 by document (seeded: no text
crosses the split). Each part is tokenized as one stream (documents separated by the end-of-text
token) and cut into non-overlapping windows of ``seq_len`` tokens. Calibration windows (Fisher
gradients, mask tuning, the search and its final pick) are a seeded sample of the training windows;
the held-out windows of the test documents give the reported perplexity.

- ``task_loss``: cross-entropy of the true next tokens (non-zero gradient at the dense model, so
  Fisher scores work).
- ``divergence``: KL of the next-token distribution from the dense model's, per window (mean over
  positions). The dense distribution is kept as its ``top_k`` most likely tokens plus one bucket for
  the rest (49,152 floats per position would not fit in memory for a calibration set); the KL of
  these coarsened distributions is a lower bound of the full KL and equal to it when the dense
  model's mass is in its top k.
- ``evaluate``: perplexity ``exp(total NLL / total predicted tokens)`` with per-window NLL sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.tasks.base import MetricResult, Tokenized, aggregate
from planner.tasks.data import load_documents, split_documents

DEFAULT_CALIBRATION_WINDOWS = 64
"""Calibration windows when none are asked for (64 x 128 tokens: Fisher in about a minute on 2 cores)."""
DEFAULT_TEST_WINDOWS = 64
"""Held-out windows the perplexity is measured on when none are asked for."""
DEFAULT_GUARD_WINDOWS = 64
"""Guard windows when none are asked for (training windows outside the calibration set)."""
DEFAULT_SEARCH_WINDOWS = 16
"""Calibration windows the search scores candidates on when none are asked for (the rest pick)."""
BATCH_WINDOWS = 4
"""Windows per forward (and per Fisher gradient): (4, seq, vocab) logits stay a few hundred MB."""
TOP_K = 64


@dataclass(frozen=True)
class TopKReference:
    """The dense model's next-token distributions on a set of windows, coarsened to its top k.

    Attributes:
        index: (n, S-1, k) int64 most likely tokens per position.
        log_probs: (n, S-1, k) float32 their log-probabilities.
        rest: (n, S-1) float32 log-probability of every other token together.
    """

    index: torch.Tensor
    log_probs: torch.Tensor
    rest: torch.Tensor


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p <= 0, stable; clamped away from log(0)."""
    p = log_p.exp().clamp(max=1.0 - 1e-7)
    return torch.log1p(-p)


class CausalLM:
    """Next-token prediction on text windows; the metric is perplexity (lower is better)."""

    name = "causal-lm"
    metric = "perplexity"
    search_examples = DEFAULT_SEARCH_WINDOWS

    def __init__(
        self,
        *,
        calibration: Tokenized,
        test: Tokenized,
        batch_size: int,
        provenance: Mapping[str, Any],
        top_k: int = TOP_K,
        training: Tokenized | None = None,
        guard: Tokenized | None = None,
    ) -> None:
        self.calibration = calibration
        self.test = test
        self.training = training if training is not None else calibration.subset(range(0))
        self.guard = guard if guard is not None else calibration.subset(range(0))
        self.batch_size = batch_size
        self.top_k = top_k
        self._provenance = dict(provenance)

    def logits(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits

    def task_loss(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        logits = self.logits(model, input_ids, attention_mask)[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))

    @torch.inference_mode()
    def reference(self, model: nn.Module, tokens: Tokenized) -> TopKReference:
        model.eval()
        index, values, rest = [], [], []
        for ids, mask, _ in tokens.batches(self.batch_size):
            log_probs = F.log_softmax(self.logits(model, ids, mask)[:, :-1].float(), dim=-1)
            top = log_probs.topk(self.top_k, dim=-1)
            index.append(top.indices)
            values.append(top.values)
            rest.append(_log1mexp(torch.logsumexp(top.values, dim=-1)))
        return TopKReference(torch.cat(index), torch.cat(values), torch.cat(rest))

    @torch.inference_mode()
    def divergence(self, model: nn.Module, tokens: Tokenized, reference: Any) -> np.ndarray:
        model.eval()
        out = []
        start = 0
        for ids, mask, _ in tokens.batches(self.batch_size):
            stop = start + ids.shape[0]
            log_q = F.log_softmax(self.logits(model, ids, mask)[:, :-1].float(), dim=-1)
            p_log = reference.log_probs[start:stop]
            q_top = log_q.gather(-1, reference.index[start:stop])
            q_rest = _log1mexp(torch.logsumexp(q_top, dim=-1))
            p_rest = reference.rest[start:stop]
            kl = (p_log.exp() * (p_log - q_top)).sum(-1) + p_rest.exp() * (p_rest - q_rest)
            out.append(kl.clamp(min=0.0).mean(dim=-1).double())
            start = stop
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, tokens: Tokenized | None = None) -> MetricResult:
        data = self.test if tokens is None else tokens
        model.eval()
        nll = []
        for ids, mask, _ in data.batches(self.batch_size):
            logits = self.logits(model, ids, mask)[:, :-1].float()
            loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (b, S-1)
            nll.append(loss.sum(dim=1).double())
        per_window = torch.cat(nll).numpy()
        weights = np.full(per_window.shape, float(data.input_ids.shape[1] - 1))
        return MetricResult("perplexity", aggregate("perplexity", per_window, weights), per_window, weights, False)

    def deployable(self, model: nn.Module) -> nn.Module:
        return model

    def provenance(self) -> Mapping[str, Any]:
        return dict(self._provenance)


def token_windows(tokenizer: Any, documents: Sequence[str], seq_len: int) -> torch.Tensor:
    """(n, seq_len) int64: the documents as one stream (separated by the end-of-text token), cut into
    non-overlapping windows (the incomplete tail is dropped)."""
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    stream: list[int] = []
    encoded = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    for ids in encoded:
        stream.extend(ids)
        if separator is not None:
            stream.append(int(separator))
    count = len(stream) // seq_len
    return torch.tensor(stream[: count * seq_len], dtype=torch.int64).reshape(count, seq_len)


def _windows(ids: torch.Tensor) -> Tokenized:
    return Tokenized(ids, torch.ones_like(ids), None)


def build_causal_lm(
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
) -> CausalLM:
    """Split the documents, tokenize, cut windows, sample calibration, guard and test windows.

    The guard windows (``guard_size``, None: 64, at most half of the windows the calibration set leaves) are a seeded
    sample of the training windows outside the calibration set; recovery trains on the rest.
    """
    documents = load_documents(data)
    if len(documents) < 2:
        raise PlannerError(
            f"{data} holds {len(documents)} document(s); a causal-lm task needs at least two (one for the held-out "
            "perplexity): split the text into several files or rows."
        )
    train_docs, test_docs = split_documents(documents, test_fraction=0.2, seed=seed)
    tokenizer = loaded.tokenizer()
    train = token_windows(tokenizer, train_docs, seq_len)
    test = token_windows(tokenizer, test_docs, seq_len)
    wanted = DEFAULT_CALIBRATION_WINDOWS if calibration_size is None else calibration_size
    tests = DEFAULT_TEST_WINDOWS if test_size is None else test_size
    if len(train) < wanted:
        raise PlannerError(
            f"the training text of {data} gives {len(train)} windows of {seq_len} tokens; {wanted} calibration "
            f"windows were asked for. Lower --calibration-size or --seq-len, or give more text."
        )
    if len(test) < 1:
        raise PlannerError(
            f"the held-out text of {data} is shorter than one window of {seq_len} tokens; lower --seq-len or give "
            "more text."
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=wanted, replace=False))
    calibration = train[chosen]
    rest = train[np.setdiff1d(np.arange(len(train)), chosen)]
    guards = min(DEFAULT_GUARD_WINDOWS, len(rest) // 2) if guard_size is None else min(guard_size, len(rest))
    guarded = np.sort(np.random.default_rng(seed + 1).choice(len(rest), size=guards, replace=False))
    guard = rest[guarded]
    rest = rest[np.setdiff1d(np.arange(len(rest)), guarded)]
    held_out = test[np.sort(rng.choice(len(test), size=min(tests, len(test)), replace=False))]
    provenance = {
        "task": CausalLM.name,
        "data": data,
        "seq_len": seq_len,
        "calibration_size": int(calibration.shape[0]),
        "test_size": int(held_out.shape[0]),
        "test_tokens": int(held_out.shape[0] * (seq_len - 1)),
        "guard_size": int(guard.shape[0]),
        "seed": seed,
    }
    return CausalLM(
        calibration=_windows(calibration),
        test=_windows(held_out),
        batch_size=max(1, min(BATCH_WINDOWS, batch_size)),
        provenance=provenance,
        training=_windows(rest),
        guard=_windows(guard),
    )
