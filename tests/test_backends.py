"""Pruning backends on tiny random BERTs: Fisher gradients, tuning, magnitude masks, apply/save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from planner.backends import Calibration, FisherBackend, MagnitudeBackend, get_backend
from planner.backends.fisher import binary_masks, mask_gradients, tune_masks
from planner.classifier import Tokenized
from planner.errors import PlannerError
from planner.models import BertAdapter, GenericAdapter, LoadedModel
from planner.models.fingerprint import model_fingerprint
from planner.models.masks import bert_masks
from planner.plan import Plan
from planner.planning import make_plan
from planner.pruned_io import load_pruned, save_pruned
from profilers.sparse_kernels import two_four_mask, unstructured_mask
from tests.test_table import make_table
from tests.tiny_models import plan_of, tiny_bert, tiny_net


def classifier_setup(seed: int = 0, n: int = 24, dtype: torch.dtype = torch.float32):  # type: ignore[no-untyped-def]
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
    tokens = Tokenized(ids, mask, labels)

    def forward(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model(input_ids=i, attention_mask=m).logits

    adapter = BertAdapter(model, name="tiny", ffn_step=8)
    return model, adapter, Calibration(tokens, forward, batch_size=8)


def test_fisher_gradients_match_finite_differences() -> None:
    _, adapter, calib = classifier_setup(dtype=torch.float64)
    head_grads, neuron_grads = mask_gradients(adapter, calib)
    ids, mask, labels = next(calib.tokens.batches(8))
    eps = 1e-5

    def loss(head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        with torch.no_grad(), bert_masks(adapter.layers, head_mask=head_mask, neuron_mask=neuron_mask):
            return float(F.cross_entropy(calib.forward(ids, mask), labels))

    for layer, unit in [(0, 1), (1, 3)]:
        plus, minus = torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)
        plus[layer, unit] += eps
        minus[layer, unit] -= eps
        ones = torch.ones(2, 48, dtype=torch.float64)
        numeric = (loss(plus, ones) - loss(minus, ones)) / (2 * eps)
        assert head_grads[0, layer, unit] == pytest.approx(numeric, rel=1e-4, abs=1e-8)
    for layer, unit in [(0, 5), (1, 40)]:
        plus, minus = torch.ones(2, 48, dtype=torch.float64), torch.ones(2, 48, dtype=torch.float64)
        plus[layer, unit] += eps
        minus[layer, unit] -= eps
        ones = torch.ones(2, 4, dtype=torch.float64)
        numeric = (loss(ones, plus) - loss(ones, minus)) / (2 * eps)
        assert neuron_grads[0, layer, unit] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_fisher_error_table_is_half_the_removed_fisher() -> None:
    _, adapter, calib = classifier_setup()
    scores = FisherBackend().score(adapter, calib)
    assert scores.units == tuple(u.name for u in adapter.units())
    head_grads = scores.extra["head_grads"]
    fisher = (head_grads[:, 0, :] ** 2).sum(axis=0)
    expected = [0.0] + [0.5 * np.sort(fisher)[:i].sum() for i in range(1, 5)]
    np.testing.assert_allclose(scores.errors[0], expected, rtol=1e-9)
    for errors in scores.errors:
        assert errors[0] == 0 and np.all(np.diff(errors) >= -1e-12)


def test_fisher_needs_labels_and_a_bert() -> None:
    _, adapter, calib = classifier_setup()
    with pytest.raises(PlannerError, match="no labels"):
        Calibration(Tokenized(calib.tokens.input_ids, calib.tokens.attention_mask, None), calib.forward)
    with pytest.raises(PlannerError, match="labelled calibration data"):
        FisherBackend().score(adapter, None)
    net, x = tiny_net()
    with pytest.raises(PlannerError, match="magnitude"):
        FisherBackend().score(GenericAdapter(net, (x,), name="net"), calib)
    with pytest.raises(PlannerError, match="unknown backend 'obs'; available: fisher, magnitude"):
        get_backend("obs")


def _layer_errors(adapter, calib, head_scale, neuron_scale):  # type: ignore[no-untyped-def]
    """Per layer: squared error of the student's pre-LN sums vs the dense teacher's, given the
    student's own inputs (the quantity mask tuning minimises layer by layer)."""
    from planner.backends.fisher import _teacher_targets

    targets, _, _ = _teacher_targets(adapter, calib, None)
    captured: dict[int, list[torch.Tensor]] = {}
    handles = []
    for i, layer in enumerate(adapter.layers):
        captured[i] = []
        handles.append(
            layer.attention.output.LayerNorm.register_forward_pre_hook(lambda m, a, i=i: captured[i].append(a[0]))
        )
    with torch.no_grad(), bert_masks(adapter.layers, head_mask=head_scale, neuron_mask=neuron_scale):
        for ids, mask, _ in calib.tokens.batches(calib.batch_size):
            adapter.bert(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    token_mask = calib.tokens.attention_mask.unsqueeze(-1)
    return [float((((torch.cat(captured[i]) - targets[i].attention) * token_mask) ** 2).sum()) for i in range(2)]


def test_mask_tuning_does_not_increase_the_first_layer_error() -> None:
    _, adapter, calib = classifier_setup(n=32)
    heads = {0: [0, 2], 1: [1, 2, 3]}
    neurons = {0: list(range(0, 48, 3)), 1: list(range(20))}
    binary = binary_masks(adapter, heads, neurons)
    tuned = tune_masks(adapter, heads, neurons, calib)
    assert torch.all((tuned[0] == 0) == (binary[0] == 0)) and torch.all((tuned[1] == 0) == (binary[1] == 0))
    assert not torch.equal(tuned[0], binary[0])  # something was actually tuned
    before = _layer_errors(adapter, calib, *binary)
    after = _layer_errors(adapter, calib, *tuned)
    assert after[0] <= before[0] + 1e-6  # layer 0: same inputs for both, the LS guarantee applies


def _loaded(model: torch.nn.Module, adapter: BertAdapter) -> LoadedModel:
    return LoadedModel(spec="tiny", adapter=adapter, fingerprint=model_fingerprint(model), source=None)


def _table_for(adapter: BertAdapter, fingerprint: str):  # type: ignore[no-untyped-def]
    import pandas as pd

    from profilers import LatencyTable

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
                    "median_ms": cost,
                    "raw_median_ms": cost,
                    "p10_ms": cost,
                    "p90_ms": cost,
                    "repeats": 3,
                    "impl": "shrunk",
                    "masked_ms": np.nan,
                    "sparse_ms": np.nan,
                    "signature": unit.signature,
                }
            )
    base = make_table(fingerprint)
    import dataclasses

    dense_sum = 10.5 * len(adapter.units())
    meta = dataclasses.replace(
        base.meta,
        dense_ms=dense_sum + 5.0,
        fixed_ms=5.0,
        calibration_sum_ms=(dense_sum,),
        calibration_total_ms=(dense_sum + 5.0,),
    )
    return LatencyTable(frame=pd.DataFrame(rows), meta=meta)


@pytest.mark.parametrize("backend_name", ["fisher", "magnitude"])
def test_plan_apply_save_load_round_trip(tmp_path: Path, backend_name: str) -> None:
    model, adapter, calib = classifier_setup(n=16)
    loaded = _loaded(model, adapter)
    table = _table_for(adapter, loaded.fingerprint)
    backend = get_backend(backend_name)
    scores = backend.score(adapter, calib)
    plan = make_plan(loaded=loaded, table=table, scores=scores, backend=backend, speedup=2.0)
    assert plan.predicted_ms <= table.meta.dense_ms / 2.0 + 1e-9
    pruned = backend.apply(adapter, plan, calib)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    plan_path = plan.save(tmp_path / "plan.json")
    assert Plan.load(plan_path, expected_fingerprint=loaded.fingerprint) == plan
    out = save_pruned(pruned, tmp_path / "pruned", plan=plan)
    reloaded = load_pruned(out)
    ids, mask = calib.tokens.input_ids, calib.tokens.attention_mask
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask).logits,
            pruned(input_ids=ids, attention_mask=mask).logits,
            rtol=0,
            atol=0,
        )
    with pytest.raises(PlannerError, match="already exists"):
        save_pruned(pruned, out, plan=plan)
    with pytest.raises(PlannerError, match="not for this model"):
        Plan.load(plan_path, expected_fingerprint="someone-else")


def test_magnitude_masks() -> None:
    w = torch.randn(16, 32)
    m = two_four_mask(w)
    assert (m.reshape(-1, 4).sum(dim=1) == 2).all()
    kept = w.abs().reshape(-1, 4).gather(1, torch.nonzero(m.reshape(-1, 4))[:, 1].reshape(-1, 2))
    dropped = w.abs().reshape(-1, 4)[~m.reshape(-1, 4)].reshape(-1, 2)
    assert (kept.min(dim=1).values >= dropped.max(dim=1).values).all()
    u = unstructured_mask(w, 0.75)
    assert int((~u).sum()) == 384
    assert w.abs()[~u].max() <= w.abs()[u].min()


def test_magnitude_scores_rank_heads_by_output_projection_norm() -> None:
    _, adapter, _ = classifier_setup()
    with torch.no_grad():
        adapter.layers[0].attention.output.dense.weight[:, 8:16] *= 100.0  # head 1 (head size 8)
    scores = MagnitudeBackend().score(adapter, None)
    assert MagnitudeBackend().select(scores, "bert.encoder.layer.0.attention", 1) == (1,)
    errors = scores.errors[0]
    assert errors[0] == 0.0 and errors[-1] == pytest.approx(1.0) and np.all(np.diff(errors) >= 0)


def test_magnitude_generic_apply_uses_csr_where_the_table_says_so() -> None:
    from planner.backends.magnitude import apply_weight_sparsity
    from planner.plan import UnitChoice
    from profilers.sparse_kernels import CSRLinear

    net, x = tiny_net()
    adapter = GenericAdapter(net, (x,), name="net", sparsity_levels=3)
    fc1 = next(u for u in adapter.units() if u.name == "fc1")
    level = fc1.levels[3]  # 99% sparse
    choice = UnitChoice(
        unit="fc1", kind="linear", level=3, structure="unstructured", sparsity=level.sparsity, impl="csr"
    )
    plan = plan_of(choice)
    pruned = apply_weight_sparsity(adapter, plan)
    assert isinstance(pruned.fc1, CSRLinear)
    masked = net.fc1.weight * unstructured_mask(net.fc1.weight, level.sparsity or 0.0)
    with torch.no_grad():
        expected = net.fc2(
            torch.relu(torch.nn.functional.linear(torch.relu(net.conv(x)).flatten(1), masked, net.fc1.bias))
        )
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fisher_plan_and_apply_on_the_real_minilm(tmp_path: Path) -> None:
    from planner.classifier import accuracy
    from planner.profile import ProfileConfig, profile_model
    from planner.workflows import apply_plan, create_plan

    table = tmp_path / "table.csv"
    profile_model(ProfileConfig(model="minilm", batch_size=4, seq_len=32, rounds=2), out=table, progress=False)
    plan = create_plan(
        model="minilm",
        table=table,
        speedup=1.5,
        backend="fisher",
        data="bbc",
        calibration_size=32,
        out=tmp_path / "plan.json",
    )
    assert plan.predicted_speedup >= 1.5 - 1e-9
    out = apply_plan(
        model="minilm", plan=tmp_path / "plan.json", out=tmp_path / "pruned", data="bbc", calibration_size=32
    )
    model = load_pruned(out)
    from planner.models import load_model
    from planner.task import build_task

    task = build_task(load_model("minilm"), data="bbc", seq_len=32, calibration_size=32)
    acc = accuracy(model, task.test_tokens.subset(list(range(64))))
    assert 0.0 <= acc <= 1.0
    assert acc > 0.5  # five classes: chance is 0.2
