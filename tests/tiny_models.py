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
    from planner.records.plan import Plan

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


def tiny_task(tokens: Any, *, head: nn.Linear | None = None, batch_size: int = 8) -> Any:
    """A text-classification task over given tokens (calibration = test = ``tokens``)."""
    from planner.tasks import TextClassification

    return TextClassification(
        calibration=tokens,
        test=tokens,
        classes=("a", "b", "c"),
        head=head,
        batch_size=batch_size,
        provenance={"task": "text-classification", "data": "tiny"},
    )


def classifier_setup(seed: int = 0, n: int = 24, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, Any]:
    """A tiny BERT sequence classifier with random biases, its adapter (FFN step 8) and a task of
    ``n`` labelled random documents (some padded)."""
    from planner.models import BertAdapter
    from planner.tasks import Tokenized

    model = tiny_bert(classifier=True, seed=seed).to(dtype)
    torch.manual_seed(seed)
    with torch.no_grad():  # random biases so zero-unit blocks still matter
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.02)
    ids = torch.randint(5, 120, (n, 8), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed + 1))
    adapter = BertAdapter(model, name="tiny", ffn_step=8)
    return model, adapter, tiny_task(Tokenized(ids, mask, labels))


def table_for(adapter: Any, fingerprint: str, *, fixed_ms: float = 5.0) -> Any:
    """A hand-made latency table for ``adapter``'s units: linear in the level, 0.5..10.5 ms per unit."""
    import dataclasses

    import numpy as np
    import pandas as pd

    from profilers import LatencyTable
    from tests.test_table import make_table

    rows = []
    for unit in adapter.units():
        n = len(unit.levels)
        for level in unit.levels:
            cost = 10.0 * (n - 1 - level.index) / (n - 1) + 0.5
            rows.append(
                {
                    "unit": unit.name,
                    "kind": unit.kind,
                    "level": level.index,
                    "structure": level.structure,
                    "kept": level.kept,
                    "sparsity": np.nan,
                    "groups": np.nan,
                    "latency_ms": cost,
                    "raw_ms": cost,
                    "ci_low_ms": cost,
                    "ci_high_ms": cost,
                    "median_ms": cost,
                    "p10_ms": cost,
                    "p90_ms": cost,
                    "repeats": 3,
                    "noisy_rounds": 0,
                    "impl": "shrunk",
                    "masked_ms": np.nan,
                    "sparse_ms": np.nan,
                    "signature": unit.signature,
                }
            )
    dense_sum = 10.5 * len(adapter.units())
    meta = dataclasses.replace(
        make_table(fingerprint).meta,
        architecture=adapter.architecture,
        ffn_step=getattr(adapter, "ffn_step", None),
        dense_ms=dense_sum + fixed_ms,
        fixed_ms=fixed_ms,
        calibration_sum_ms=(dense_sum,),
        calibration_total_ms=(dense_sum + fixed_ms,),
    )
    return LatencyTable(frame=pd.DataFrame(rows), meta=meta)


def loaded_of(model: nn.Module, adapter: Any, spec: str = "tiny") -> Any:
    """A ``LoadedModel`` around an adapter built in a test (no tokenizer)."""
    from planner.models import LoadedModel
    from planner.models.fingerprint import model_fingerprint

    return LoadedModel(spec=spec, adapter=adapter, fingerprint=model_fingerprint(model), source=None)


def _with_random_biases(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():  # random init leaves biases at zero; zero-unit blocks must still keep theirs
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.02)
    return model.eval()


def _bert_encoder() -> Any:
    from planner.models import BertAdapter

    return BertAdapter(_with_random_biases(tiny_bert()), name="tiny-bert", ffn_step=8)


def _bert_classifier() -> Any:
    from planner.models import BertAdapter

    return BertAdapter(_with_random_biases(tiny_bert(classifier=True)), name="tiny-bert-cls", ffn_step=8)


TINY_ADAPTERS: dict[str, Any] = {"bert": _bert_encoder, "bert/classifier": _bert_classifier}
"""Family (and variant) -> a tiny random-weight adapter; every contract suite runs over all of them."""


def _labelled_tokens(adapter: Any, n: int = 12) -> Any:
    from planner.tasks import Tokenized

    ids, mask = adapter.example_inputs(n, 7)
    mask = mask.clone()
    mask[::3, 5:] = 0
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(0))
    return Tokenized(ids, mask, labels)


def _fitted_head_task(adapter: Any) -> Any:
    torch.manual_seed(1)
    return tiny_task(_labelled_tokens(adapter), head=nn.Linear(adapter.model.config.hidden_size, 3))


TINY_TASKS: dict[str, Any] = {
    "bert": _fitted_head_task,
    "bert/classifier": lambda adapter: tiny_task(_labelled_tokens(adapter)),
}
"""Family -> a tiny task for its adapter (what backends score and tune on)."""


DECODER_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2"),  # q/k/v biases
    "qwen3": dict(model_type="qwen3", attention_bias=True),  # q/k norms per head, o_proj bias
    "mistral": dict(model_type="mistral"),
    "gemma3": dict(model_type="gemma3_text", query_pre_attn_scalar=8, sliding_window=4),  # post-norms
}


def tiny_decoder(family: str = "llama", *, seed: int = 0) -> nn.Module:
    """A 2-layer causal LM with random weights: 4 query heads in 2 KV groups (head size 8), hidden 32,
    MLP 48, vocab 120; GPT-2: 4 heads, MLP 48."""
    import transformers

    torch.manual_seed(seed)
    if family == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=120,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_inner=48,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return _with_random_biases(transformers.GPT2LMHeadModel(config), seed)
    values = dict(DECODER_CONFIGS[family])
    model_type = values.pop("model_type")
    config = transformers.AutoConfig.for_model(
        model_type,
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=48,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        **values,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    return _with_random_biases(model, seed)


def _decoder(family: str) -> Any:
    from planner.models.decoder import decoder_adapter

    return lambda: decoder_adapter(tiny_decoder(family), name=f"tiny-{family}", ffn_step=8)


TINY_ADAPTERS.update(
    {
        "llama": _decoder("llama"),
        "llama/qwen2": _decoder("qwen2"),
        "llama/qwen3": _decoder("qwen3"),
        "llama/mistral": _decoder("mistral"),
        "llama/gemma3": _decoder("gemma3"),
        "gpt2": _decoder("gpt2"),
    }
)


def tiny_lm_task(adapter: Any, n: int = 12, seq: int = 8) -> Any:
    """A causal-lm task over ``n`` random token windows (calibration = test), batch 4, top-8 KL."""
    from planner.tasks import CausalLM, Tokenized

    ids, mask = adapter.example_inputs(n, seq)
    return CausalLM(
        calibration=Tokenized(ids, mask, None),
        test=Tokenized(ids, mask, None),
        batch_size=4,
        provenance={"task": "causal-lm", "data": "tiny"},
        top_k=8,
    )


TINY_TASKS.update({name: tiny_lm_task for name in TINY_ADAPTERS if name.startswith(("llama", "gpt2"))})


def skipped_and_whole_logits(adapter: Any, cut: Any, monkeypatch: Any) -> tuple[Any, Any]:
    """((prefill logits, one cached step's logits) of ``adapter.shrink(cut)``, the same of the same cut with
    its layers kept whole (``skip_identity_layers`` off)): a layer replaced for speed must change neither."""
    import torch

    from planner.models.hf_compat import output_cache, with_cache

    ids, mask = adapter.example_inputs(2, 6)

    def run(model: Any) -> tuple[Any, Any]:
        first = model(input_ids=ids, attention_mask=mask, use_cache=True)
        step = model(**with_cache(model, output_cache(first), input_ids=ids[:, :1], use_cache=True)).logits
        return first.logits, step

    with torch.no_grad():
        skipped = run(adapter.shrink(cut))
        monkeypatch.setattr(adapter, "skip_identity_layers", lambda _layers: None)
        whole = run(adapter.shrink(cut))
    return skipped, whole
