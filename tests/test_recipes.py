"""Choosing how a plan is applied (``planner.stages.apply.choose``): every recipe the backend offers is
applied and the model closest to the dense one on held-out training examples is kept; models that gain
output biases (FLAP's compensation on Llama) skip their emptied blocks' norms, save and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from planner.backends import FisherBackend
from planner.backends.base import recipes_of
from planner.backends.tuning import add_bias, output_projection
from planner.models.decoder_surgery import AttentionlessLayer
from planner.models.units import first_kept
from planner.records.plan import UnitChoice
from planner.stages.apply.choose import apply_best, selection_examples
from planner.stages.apply.pruned_io import load_pruned, save_pruned
from planner.tasks import CausalLM, Tokenized
from tests.tiny_models import TINY_ADAPTERS, plan_of, skipped_and_whole_logits


def _task_with_training(adapter: Any, *, training: int = 24) -> CausalLM:
    """A tiny causal-lm task whose training split (``training`` windows) is disjoint from calibration."""
    torch.manual_seed(1)
    ids, mask = adapter.example_inputs(16 + training, 8)
    calibration = Tokenized(ids[:16], mask[:16], None)
    rest = Tokenized(ids[16:], mask[16:], None) if training else None
    return CausalLM(
        calibration=calibration,
        test=calibration,
        batch_size=4,
        provenance={"task": "causal-lm", "data": "tiny"},
        top_k=8,
        training=rest,
    )


def _deep_plan(adapter: Any) -> Any:
    """Layer 1's attention emptied, every MLP at a quarter of its neurons, layer 0's attention halved."""
    choices = []
    for unit in adapter.units():
        if unit.kind == "attention":
            level = unit.levels[-1] if unit.layer == 1 else unit.levels[len(unit.levels) // 2]
        else:
            level = next(lv for lv in unit.levels if (lv.kept or 0) <= unit.size // 4)
        keep = first_kept(unit, level)
        structure = "heads" if unit.kind == "attention" else "neurons"
        choices.append(
            UnitChoice(unit.name, unit.kind, level.index, structure, kept=len(keep), keep=keep, size=unit.size)
        )
    return plan_of(*choices, architecture="llama", backend="fisher")


def _logits(model: torch.nn.Module, task: CausalLM) -> torch.Tensor:
    with torch.no_grad():
        return task.logits(model, task.calibration.input_ids, task.calibration.attention_mask)


def test_the_recipe_closest_to_the_dense_model_on_held_out_training_examples_is_kept() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    task = _task_with_training(adapter)
    plan = _deep_plan(adapter)
    model, choice = apply_best(FisherBackend(), adapter, plan, task)
    assert choice is not None
    assert set(choice.mean_kl) == {
        "mask tuning",
        "block-target tuning",
        "bias compensation",
        "fluctuation + compensation",
    }
    assert choice.recipe == min(choice.mean_kl, key=choice.mean_kl.__getitem__)
    # the margin: the kept recipe's KL minus the runner-up's, paired, with its interval and whether it resolves
    runner_up = sorted(kl for name, kl in choice.mean_kl.items() if name != choice.recipe)[0]
    assert choice.margin is not None and choice.margin.low <= choice.margin.difference <= choice.margin.high
    assert choice.margin.difference == pytest.approx(choice.mean_kl[choice.recipe] - runner_up, rel=1e-6, abs=1e-9)
    assert (choice.margin.verdict == "win") == (choice.margin.high < 0) and " below " in choice.text()
    examples = selection_examples(task)
    assert examples is not None and choice.examples == len(examples) == 24
    # each recipe's KL is what that recipe's model scores on the selection examples
    reference = task.reference(adapter.model, examples)
    for name, recipe in FisherBackend().recipes(adapter).items():
        applied = recipe.selected(adapter, plan, task) if name == "fluctuation + compensation" else plan
        kl = float(np.mean(task.divergence(recipe.apply(adapter, applied, task), examples, reference)))
        assert kl == pytest.approx(choice.mean_kl[name], rel=1e-4, abs=1e-7)
    kept = FisherBackend().recipes(adapter)[choice.recipe].apply(adapter, choice.plan, task)
    torch.testing.assert_close(_logits(model, task), _logits(kept, task), rtol=1e-5, atol=1e-5)


def test_flaps_recipe_keeps_the_plans_levels_and_chooses_the_units_by_fluctuation() -> None:
    """FLAP's apply of another method's plan: the same counts per unit (the same latency), the heads /
    neurons FLAP's own scores rank first; the plan saved beside the model says which were kept."""
    from planner.backends.base import best_keep
    from planner.backends.flap import FlapBackend

    adapter = TINY_ADAPTERS["llama"]()
    task = _task_with_training(adapter)
    plan = _deep_plan(adapter)
    flap = FlapBackend()
    selected = flap.selected(adapter, plan, task)
    scores = flap.score(adapter, task)
    units = {u.name: u for u in adapter.units()}
    assert [c.kept for c in selected.units] == [c.kept for c in plan.units]
    assert [c.level for c in selected.units] == [c.level for c in plan.units]
    for choice in selected.units:
        unit = units[choice.unit]
        assert choice.keep == best_keep(scores.importance[unit.name], unit, unit.levels[choice.level])
    assert any(a.keep != b.keep for a, b in zip(selected.units, plan.units, strict=True))  # Fisher chose others
    model, choice = apply_best(FlapBackend(), adapter, plan, task)  # FLAP's own plans are applied as they are
    assert choice is None
    torch.testing.assert_close(_logits(model, task), _logits(flap.apply(adapter, plan, task), task))


def test_the_selection_examples_are_training_examples_no_stage_before_saw() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    task = _task_with_training(adapter, training=100)
    examples = selection_examples(task)
    assert examples is not None and len(examples) == 32
    calibration = {tuple(row.tolist()) for row in task.calibration.input_ids}
    training = {tuple(row.tolist()) for row in task.training.input_ids}
    chosen = {tuple(row.tolist()) for row in examples.input_ids}
    assert chosen <= training and not chosen & calibration


def test_without_training_examples_the_backends_own_recipe_applies() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    task = _task_with_training(adapter, training=0)
    plan = _deep_plan(adapter)
    model, choice = apply_best(FisherBackend(), adapter, plan, task)
    assert choice is None
    torch.testing.assert_close(_logits(model, task), _logits(FisherBackend().apply(adapter, plan, task), task))


def test_every_recipe_is_offered_to_llamas_whose_projections_have_no_biases() -> None:
    """The biases compensation adds are saved with the folder and written to GGUF (``test_gguf``), so a
    model bound for llama.cpp is offered the same recipes."""
    llama, gpt2 = TINY_ADAPTERS["llama"](), TINY_ADAPTERS["gpt2"]()
    recipes = ["mask tuning", "block-target tuning", "bias compensation", "fluctuation + compensation"]
    assert list(recipes_of(FisherBackend(), llama)) == recipes
    assert list(recipes_of(FisherBackend(), gpt2)) == recipes  # its projections have biases already
    assert list(recipes_of(FisherBackend(tune=False), llama)) == ["Fisher"]


@pytest.mark.parametrize(("family", "recipes"), [
    ("bert", ["mask tuning", "bias compensation", "fluctuation + compensation"]),  # its stream: pre-LN sums
    ("llama/gemma3", ["mask tuning", "bias compensation", "fluctuation + compensation"]),  # post-norms
])  # fmt: skip
def test_the_block_target_is_offered_only_where_it_differs_from_the_familys_own(
    family: str, recipes: list[str]
) -> None:
    assert list(recipes_of(FisherBackend(), TINY_ADAPTERS[family]())) == recipes


def test_a_compensated_llama_saves_and_loads_with_its_new_biases(tmp_path: Path) -> None:
    adapter = TINY_ADAPTERS["llama"]()
    task = _task_with_training(adapter)
    plan = _deep_plan(adapter)
    pruned = FisherBackend().recipes(adapter)["bias compensation"].apply(adapter, plan, task)
    layers = adapter.layers_of(pruned)
    assert isinstance(layers[1], AttentionlessLayer) and layers[1].self_attn.bias is not None
    assert pruned.config.to_dict().get("attention_bias") in (False, None)  # the dense config declares none
    out = save_pruned(
        pruned,
        tmp_path / "pruned",
        plan=plan,
        shape=adapter.kept_shape(pruned),
        base_config=adapter.model.config.to_dict(),
    )
    torch.testing.assert_close(_logits(load_pruned(out), task), _logits(pruned, task), rtol=0, atol=0)


@pytest.mark.parametrize("mlp", ["kept", "emptied"])
def test_an_emptied_attention_with_a_bias_adds_it_without_the_norm_and_changes_nothing(
    mlp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = TINY_ADAPTERS["llama"]()
    torch.manual_seed(2)
    for unit in adapter.units():
        projection = output_projection(adapter, unit)
        add_bias(projection, torch.randn(projection.get_parameter("weight").shape[0]))
    cut = {
        u.name: first_kept(u, u.levels[-1])
        for u in adapter.units()
        if u.layer == 1 and (u.kind == "attention" or mlp == "emptied")
    }
    shrunk = adapter.shrink(cut)
    assert isinstance(adapter.layers_of(shrunk)[1], AttentionlessLayer)
    (new, step), (old, old_step) = skipped_and_whole_logits(adapter, cut, monkeypatch)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(step, old_step, rtol=1e-6, atol=1e-6)
    assert sorted(shrunk.state_dict()) == sorted(adapter.shrink(cut).state_dict())
