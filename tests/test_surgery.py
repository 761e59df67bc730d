"""Structured surgery: a shrunk BERT gives exactly the outputs of the masked dense model."""

from __future__ import annotations

import pytest
import torch

from planner.models import BertAdapter
from planner.models.bert_surgery import HeadlessAttention, attention_heads, ffn_neurons, prune_heads
from tests.tiny_models import tiny_bert


def _inputs(batch: int = 3, seq: int = 7, pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 120, (batch, seq), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    if pad:
        mask[0, 4:] = 0  # padding exercises the attention mask path
    return ids, mask


@pytest.mark.parametrize("classifier", [False, True])
@pytest.mark.parametrize(
    ("heads", "neurons"),
    [
        ({0: [1, 3], 1: [0, 1, 2, 3]}, {0: list(range(0, 48, 2)), 1: [5]}),
        ({0: [], 1: [2]}, {0: [], 1: list(range(48))}),  # zero heads / zero neurons keep the biases
        ({0: [], 1: []}, {0: [], 1: []}),
        ({0: [3, 0]}, {1: [47, 0, 11]}),  # unordered keep lists
    ],
)
def test_shrunk_model_matches_masked_dense_model(classifier: bool, heads, neurons) -> None:  # type: ignore[no-untyped-def]
    model = tiny_bert(classifier=classifier)
    adapter = BertAdapter(model, name="tiny")
    masks, keep = {}, {}
    for unit in adapter.units():
        chosen = (heads if unit.kind == "attention" else neurons).get(unit.layer)
        if chosen is not None:
            masks[unit.name] = torch.zeros(unit.size)
            masks[unit.name][list(chosen)] = 1.0
            keep[unit.name] = chosen
    ids, mask = _inputs()
    with torch.no_grad(), adapter.masked(masks):
        expected = model(input_ids=ids, attention_mask=mask)[0]
    shrunk = adapter.shrink(keep)
    with torch.no_grad():
        got = shrunk(input_ids=ids, attention_mask=mask)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The original model is untouched and the copy is really smaller.
    assert attention_heads(adapter.layers[0].attention) == 4
    shrunk_bert = shrunk.bert if classifier else shrunk
    for layer, keep in heads.items():
        assert attention_heads(shrunk_bert.encoder.layer[layer].attention) == len(keep)
    for layer, keep in neurons.items():
        assert ffn_neurons(shrunk_bert.encoder.layer[layer]) == len(keep)
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in model.parameters())


def test_masks_change_outputs_and_are_removed_afterwards() -> None:
    model = tiny_bert()
    adapter = BertAdapter(model, name="tiny")
    ids, mask = _inputs(pad=False)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask)[0]
        with adapter.masked({u.name: torch.zeros(4) for u in adapter.units() if u.kind == "attention"}):
            masked = model(input_ids=ids, attention_mask=mask)[0]
        after = model(input_ids=ids, attention_mask=mask)[0]
    assert not torch.allclose(before, masked)
    torch.testing.assert_close(before, after)


def test_zero_heads_keep_the_output_bias() -> None:
    model = tiny_bert()
    attention = model.encoder.layer[0].attention
    with torch.no_grad():
        attention.output.dense.bias.normal_()  # random init leaves biases at zero
    headless = prune_heads(attention, [])
    assert isinstance(headless, HeadlessAttention)
    x = torch.randn(2, 5, 32)
    expected = attention.output.LayerNorm(x + attention.output.dense.bias)
    torch.testing.assert_close(headless(x)[0], expected)
    assert not torch.allclose(headless(x)[0], attention.output.LayerNorm(x))


@pytest.mark.parametrize("keep", [[4], [-1], [0, 0]])
def test_bad_keep_lists_are_rejected(keep: list[int]) -> None:
    model = tiny_bert()
    with pytest.raises(ValueError, match="heads to keep"):
        prune_heads(model.encoder.layer[0].attention, keep)


def test_pruned_model_refuses_to_be_profiled_again() -> None:
    adapter = BertAdapter(tiny_bert(), name="tiny")
    shrunk = BertAdapter(adapter.shrink({"encoder.layer.0.attention": [0]}), name="tiny-pruned")
    with pytest.raises(ValueError, match="already pruned"):
        shrunk.units()
