"""Pruning backends on tiny random BERTs: Fisher gradients, tuning, magnitude masks, apply/save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from planner.backends import FisherBackend, MagnitudeBackend, get_backend
from planner.backends.fisher import mask_gradients
from planner.backends.tuning import binary_scales
from planner.backends.tuning_bert import _teacher_targets, tune_bert
from planner.errors import PlannerError
from planner.models import GenericAdapter
from planner.records.plan import Plan, UnitChoice
from planner.stages.solve import solve_plan
from planner.tasks import Tokenized
from profilers.sparse_kernels import two_four_mask, unstructured_mask
from tests.tiny_models import classifier_setup, loaded_of, plan_of, table_for, tiny_net, tiny_task

ATT0, FFN0, ATT1, FFN1 = (
    "bert.encoder.layer.0.attention",
    "bert.encoder.layer.0.ffn",
    "bert.encoder.layer.1.attention",
    "bert.encoder.layer.1.ffn",
)


def test_fisher_gradients_match_finite_differences() -> None:
    _, adapter, task = classifier_setup(dtype=torch.float64)
    grads = mask_gradients(adapter, task)
    ids, mask, labels = next(task.calibration.batches(8))
    eps = 1e-5

    def loss(unit: str, index: int, delta: float) -> float:
        size = 4 if unit.endswith("attention") else 48
        masks = {unit: torch.ones(size, dtype=torch.float64)}
        masks[unit][index] += delta
        with torch.no_grad(), adapter.masked(masks):
            return float(task.task_loss(adapter.model, ids, mask, labels))

    for unit, index in [(ATT0, 1), (ATT1, 3), (FFN0, 5), (FFN1, 40)]:
        numeric = (loss(unit, index, eps) - loss(unit, index, -eps)) / (2 * eps)
        assert grads[unit][0, index] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_fisher_error_table_is_half_the_removed_fisher() -> None:
    _, adapter, task = classifier_setup()
    scores = FisherBackend().score(adapter, task)
    assert scores.units == tuple(u.name for u in adapter.units())
    fisher = (scores.extra[f"grads::{ATT0}"] ** 2).sum(axis=0)
    expected = [0.0] + [0.5 * np.sort(fisher)[:i].sum() for i in range(1, 5)]
    np.testing.assert_allclose(scores.errors[0], expected, rtol=1e-9)
    for errors in scores.errors:
        assert errors[0] == 0 and np.all(np.diff(errors) >= -1e-12)


def test_fisher_needs_labels_and_a_transformer() -> None:
    _, adapter, task = classifier_setup()
    with pytest.raises(PlannerError, match="labelled calibration data"):
        FisherBackend().score(adapter, None)
    unlabelled = tiny_task(Tokenized(task.calibration.input_ids, task.calibration.attention_mask, None))
    with pytest.raises(PlannerError, match="no labels"):
        FisherBackend().score(adapter, unlabelled)
    net, x = tiny_net()
    with pytest.raises(PlannerError, match="magnitude"):
        FisherBackend().score(GenericAdapter(net, (x,), name="net"), task)
    with pytest.raises(PlannerError, match=r"The 'backend' parameter must be one of fisher, magnitude\. Got 'obs'"):
        get_backend("obs")


def _layer_errors(adapter, task, scales):  # type: ignore[no-untyped-def]
    """Per layer: squared error of the student's pre-LN sums vs the dense teacher's, given the
    student's own inputs (the quantity mask tuning minimises layer by layer)."""
    targets, _, _ = _teacher_targets(adapter, task, None)
    captured: dict[int, list[torch.Tensor]] = {}
    handles = []
    for i, layer in enumerate(adapter.layers):
        captured[i] = []
        handles.append(
            layer.attention.output.LayerNorm.register_forward_pre_hook(lambda m, a, i=i: captured[i].append(a[0]))
        )
    with torch.no_grad(), adapter.masked(scales):
        for ids, mask, _ in task.calibration.batches(task.batch_size):
            adapter.bert(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    token_mask = task.calibration.attention_mask.unsqueeze(-1)
    return [float((((torch.cat(captured[i]) - targets[i][0]) * token_mask) ** 2).sum()) for i in range(2)]


def test_mask_tuning_does_not_increase_the_first_layer_error() -> None:
    _, adapter, task = classifier_setup(n=32)
    keep = {ATT0: [0, 2], ATT1: [1, 2, 3], FFN0: list(range(0, 48, 3)), FFN1: list(range(20))}
    binary = binary_scales(adapter, keep)
    tuned = tune_bert(adapter, keep, task).scales
    for name in keep:
        assert torch.all((tuned[name] == 0) == (binary[name] == 0))
    assert not torch.equal(tuned[ATT0], binary[ATT0])  # something was actually tuned
    before = _layer_errors(adapter, task, binary)
    after = _layer_errors(adapter, task, tuned)
    assert after[0] <= before[0] + 1e-6  # layer 0: same inputs for both, the LS guarantee applies


@pytest.mark.parametrize("backend_name", ["fisher", "magnitude"])
def test_plan_apply_save_load_round_trip(tmp_path: Path, backend_name: str) -> None:
    from planner.stages.apply.pruned_io import load_pruned, save_pruned

    model, adapter, task = classifier_setup(n=16)
    loaded = loaded_of(model, adapter)
    table = table_for(adapter, loaded.fingerprint)
    backend = get_backend(backend_name)
    scores = backend.score(adapter, task)
    plan = solve_plan(loaded=loaded, table=table, scores=scores, backend=backend, speedup=2.0)
    assert plan.predicted_ms <= table.meta.dense_ms / 2.0 + 1e-9
    pruned = backend.apply(adapter, plan, task)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    plan_path = plan.save(tmp_path / "plan.json")
    assert Plan.load(plan_path, expected_fingerprint=loaded.fingerprint) == plan
    shape = adapter.kept_shape(pruned)
    out = save_pruned(pruned, tmp_path / "pruned", plan=plan, shape=shape, base_config=model.config.to_dict())
    reloaded = load_pruned(out)
    ids, mask = task.calibration.input_ids, task.calibration.attention_mask
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask).logits,
            pruned(input_ids=ids, attention_mask=mask).logits,
            rtol=0,
            atol=0,
        )
    with pytest.raises(PlannerError, match="already exists"):
        save_pruned(pruned, out, plan=plan, shape=shape, base_config={})
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
    unit = adapter.units()[0]
    assert MagnitudeBackend().select(scores, unit, unit.levels[3]) == (1,)
    errors = scores.errors[0]
    assert errors[0] == 0.0 and errors[-1] == pytest.approx(1.0) and np.all(np.diff(errors) >= 0)


def test_magnitude_generic_apply_uses_csr_where_the_table_says_so() -> None:
    from planner.backends.magnitude import apply_weight_sparsity
    from profilers.sparse_kernels import CSRLinear

    net, x = tiny_net()
    adapter = GenericAdapter(net, (x,), name="net", sparsity_levels=3)
    fc1 = next(u for u in adapter.units() if u.name == "fc1")
    level = fc1.levels[3]  # 99% sparse
    choice = UnitChoice(
        unit="fc1", kind="linear", level=3, structure="unstructured", sparsity=level.sparsity, impl="csr"
    )
    pruned = apply_weight_sparsity(adapter, plan_of(choice))
    assert isinstance(pruned.fc1, CSRLinear)
    masked = net.fc1.weight * unstructured_mask(net.fc1.weight, level.sparsity or 0.0)
    with torch.no_grad():
        expected = net.fc2(
            torch.relu(torch.nn.functional.linear(torch.relu(net.conv(x)).flatten(1), masked, net.fc1.bias))
        )
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fisher_plan_and_apply_on_the_real_minilm(tmp_path: Path) -> None:
    from planner.config import RunConfig
    from planner.models import load_model
    from planner.stages.apply.pruned_io import load_pruned
    from planner.tasks import build_task
    from planner.workflows import apply_plan, create_plan, profile_table

    config = RunConfig(batch_size=4, seq_len=32, rounds=2, speedup=1.5, calibration_size=32, cache_dir=tmp_path)
    table = tmp_path / "table.csv"
    profile_table(config, out=table, progress=False)
    plan = create_plan(config, table=table, out=tmp_path / "plan.json")
    assert plan.predicted_speedup >= 1.5 - 1e-9
    out = apply_plan(config, plan=tmp_path / "plan.json", out=tmp_path / "pruned")
    model = load_pruned(out)
    loaded = load_model("minilm")
    task = build_task(loaded, data="bbc", seq_len=32, calibration_size=32, batch_size=32, seed=0, cache_dir=tmp_path)
    test = task.test.subset(list(range(64)))
    # The saved classifier (pruned encoder + fitted head) scores like the task's view of it.
    correct = 0
    with torch.no_grad():
        for ids, mask, labels in test.batches(32):
            correct += int((model(ids, mask).argmax(-1) == labels).sum())
    assert correct / len(test) > 0.5  # five classes: chance is 0.2
