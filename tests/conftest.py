"""Shared test configuration: GPU tests skip without CUDA; runs are single-threaded and quiet."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PLANNER_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Classification heads fitted by tests are cached in a throw-away folder, not the user's cache.
os.environ.setdefault("PLANNER_CACHE", tempfile.mkdtemp(prefix="planner-test-cache-"))


TOPICS = {
    "sport": "the team won the match after a late goal and the fans celebrated the victory in the stadium",
    "tech": "the new phone has a faster chip and the software update improves the battery and the camera",
}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForSequenceClassification folder with the MiniLM tokenizer, and a tiny 2-class
    text folder (8 documents per class)."""
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    from planner.models import minilm_path
    from tests.tiny_models import tiny_bert_config

    root = tmp_path_factory.mktemp("workspace")
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(vocab_size=30522, max_position_embeddings=64, num_labels=2))
    model.save_pretrained(root / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, root / "model" / name)
    for label, text in TOPICS.items():
        (root / "data" / label).mkdir(parents=True)
        for i in range(8):
            (root / "data" / label / f"{i}.txt").write_text(f"{text} number {i}")
    _tiny_lm_folder(root)
    return root


def _tiny_lm_folder(root: Path) -> None:
    """``lm/``: a tiny random Llama (vocab of the MiniLM tokenizer, 4 query heads in 2 KV groups) with
    that tokenizer; ``text/``: 24 plain-text documents for the causal-lm task."""
    import shutil

    import transformers

    from planner.models import minilm_path

    config = transformers.LlamaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=48,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=101,
        eos_token_id=102,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(root / "lm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, root / "lm" / name)
    (root / "text").mkdir()
    words = " ".join(TOPICS.values()).split()
    for i in range(24):
        text = " ".join(words[(i * 7 + j) % len(words)] for j in range(60))
        (root / "text" / f"doc{i:02d}.txt").write_text(text)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Profilers in tests see a quiet machine: on a shared CI box another process's load would
    otherwise make the profiler replace rounds and change call counts. Tests of the busy-machine
    logic pass their own fake ``load_reader``; ``LoadMeter`` itself is tested directly."""
    import profilers.profiler

    monkeypatch.setattr(profilers.profiler, "_load_reader", lambda: lambda: 0.0)
