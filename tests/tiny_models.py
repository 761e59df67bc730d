"""Tiny random-weight models for fast tests (also usable as ``tests.tiny_models:<factory>`` specs)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tiny_bert_config(**overrides: object):  # type: ignore[no-untyped-def]
    from transformers import BertConfig

    values: dict[str, object] = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_bert(batch_size: int = 2, seq_len: int = 8, *, classifier: bool = False, seed: int = 0) -> nn.Module:
    """A 2-layer, 4-head BERT (hidden 32, FFN 48) with random weights, eval mode."""
    from transformers import BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = tiny_bert_config(num_labels=3)
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    return model.eval()


def tiny_bert_factory(batch_size: int = 2, seq_len: int = 8) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = tiny_bert()
    ids = torch.randint(5, 120, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return model, (ids, torch.ones_like(ids))


class TinyNet(nn.Module):
    """Conv2d -> ReLU -> flatten -> Linear -> ReLU -> Linear: (B, 3, 8, 8) -> (B, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def tiny_net(batch_size: int = 4) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyNet().eval(), torch.randn(batch_size, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def not_a_factory() -> int:
    return 3


def plan_of(*units: Any, architecture: str = "generic", **overrides: Any) -> Any:
    """A hand-written 2x ``Plan`` with the given ``UnitChoice``s (dummy table, budget and versions)."""
    from planner.plan import Plan

    values: dict[str, Any] = dict(
        model_name="net",
        model_fingerprint="f",
        architecture=architecture,
        table={"device": "cpu", "runtime": "torch"},
        target_speedup=2.0,
        predicted_ms=1.0,
        predicted_speedup=2.0,
        budget_ms=1.0,
        backend="magnitude",
        solver="dp",
        seed=0,
        units=units,
        versions={},
    )
    values.update(overrides)
    return Plan(**values)
