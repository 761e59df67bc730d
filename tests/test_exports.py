"""Exports to other pruners, checked by running them where the tool is available."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from planner.cli import main
from planner.errors import PlannerError
from planner.records.plan import UnitChoice
from planner.report.exports import (
    EXPORTS,
    export_plan,
    to_hf_heads,
    to_llmcompressor,
    to_nni,
    to_torch_ao,
    to_torch_pruning,
)
from tests.tiny_models import plan_of, tiny_net

CHANNELS = plan_of(
    UnitChoice("conv", "conv2d", 7, "channels", kept=4, impl="shrunk", size=8),
    UnitChoice("fc1", "linear", 8, "channels", kept=32, impl="shrunk", size=64),
    UnitChoice("fc2", "linear", 0, "dense", size=10),
)
SPARSE = plan_of(  # deliberately NOT in named_modules() order
    UnitChoice("fc2", "linear", 2, "unstructured", sparsity=0.5, size=10),
    UnitChoice("conv", "conv2d", 3, "unstructured", sparsity=0.75, size=8),
    UnitChoice("fc1", "linear", 5, "2:4", sparsity=0.5, size=64),
)
ATTENTION = {"query": "encoder.layer.{}.attention.self.query", "output": "encoder.layer.{}.attention.output.dense"}
FFN = {"up": "encoder.layer.{}.intermediate.dense", "down": "encoder.layer.{}.output.dense"}


def _roles(roles: dict[str, str], layer: int) -> dict[str, str]:
    return {role: path.format(layer) for role, path in roles.items()}


BERT = plan_of(
    UnitChoice(
        "encoder.layer.0.attention",
        "attention",
        2,
        "heads",
        kept=2,
        keep=(1, 3),
        size=4,
        layer=0,
        modules=_roles(ATTENTION, 0),
    ),
    UnitChoice(
        "encoder.layer.0.ffn",
        "ffn",
        3,
        "neurons",
        kept=24,
        keep=tuple(range(24)),
        size=48,
        layer=0,
        modules=_roles(FFN, 0),
    ),
    UnitChoice(
        "encoder.layer.1.attention",
        "attention",
        0,
        "dense",
        kept=4,
        keep=(0, 1, 2, 3),
        size=4,
        layer=1,
        modules=_roles(ATTENTION, 1),
    ),
    architecture="bert",
)


def test_torch_pruning_export_runs_and_matches_the_plan(tmp_path: Path) -> None:
    pytest.importorskip("torch_pruning")
    paths = export_plan(CHANNELS, "torch-pruning", tmp_path / "tp.json")
    assert [p.name for p in paths] == ["tp.json", "tp.py"]
    namespace: dict[str, object] = {}
    exec(compile((tmp_path / "tp.py").read_text(), "tp.py", "exec"), namespace)  # the generated snippet
    model, x = tiny_net()
    pruned = namespace["prune"](model, x, str(tmp_path / "tp.json"))  # type: ignore[operator]
    assert pruned.conv.out_channels == 4 and pruned.fc1.out_features == 32 and pruned.fc2.out_features == 10
    assert pruned(x).shape == (4, 10)


def test_llmcompressor_recipe_follows_named_modules_order() -> None:
    model, _ = tiny_net()
    order = [name for name, _ in model.named_modules()]
    recipe = yaml.safe_load(to_llmcompressor(SPARSE, order))
    modifiers = recipe["sparsity_stage"]["sparsity_modifiers"]
    unstructured = next(m for m in modifiers.values() if m["mask_structure"] == "0:0")
    two_four = next(m for m in modifiers.values() if m["mask_structure"] == "2:4")
    assert unstructured["targets"] == ["conv", "fc2"] and unstructured["sparsity"] == [0.75, 0.5]
    assert len(unstructured["targets"]) == len(unstructured["sparsity"])
    assert two_four["targets"] == ["fc1"] and two_four["sparsity"] == [0.5]
    with pytest.raises(PlannerError, match="not heads or neurons"):
        to_llmcompressor(BERT)


def test_torch_ao_config_sparsifies_each_tensor_as_planned() -> None:
    from torch.ao.pruning import WeightNormSparsifier

    model, _ = tiny_net()
    linear_only = plan_of(*[u for u in SPARSE.units if u.kind == "linear"])
    config = to_torch_ao(linear_only)
    sparsifier = WeightNormSparsifier()
    sparsifier.prepare(model, [{**c, "sparse_block_shape": tuple(c["sparse_block_shape"])} for c in config])
    sparsifier.step()
    sparsifier.squash_mask()
    zeros = {name: float((getattr(model, name).weight == 0).float().mean()) for name in ("conv", "fc1", "fc2")}
    assert zeros["conv"] < 0.05  # not in the config: untouched
    assert zeros["fc2"] == pytest.approx(0.5, abs=0.02)
    assert zeros["fc1"] == pytest.approx(0.5, abs=1e-6)
    groups = (model.fc1.weight == 0).reshape(-1, 4).sum(dim=1)
    assert bool((groups == 2).all())
    with pytest.raises(PlannerError, match="cannot remove heads"):
        to_torch_ao(BERT)
    with pytest.raises(PlannerError, match="2-D"):
        to_torch_ao(SPARSE)


def test_nni_and_hf_heads() -> None:
    config = to_nni(CHANNELS)
    assert config == [{"op_names": ["conv", "fc1"], "sparse_ratio": 0.5, "granularity": "out_channel"}]
    with pytest.raises(PlannerError, match="N:M"):
        to_nni(SPARSE)
    with pytest.raises(PlannerError, match="hf-heads or torch-pruning"):
        to_nni(BERT)
    assert to_hf_heads(BERT) == {"0": [0, 2]}
    with pytest.raises(PlannerError, match="BERT attention heads"):
        to_hf_heads(CHANNELS)


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = BERT.save(tmp_path / "plan.json")
    assert main(["export", "--plan", str(plan_path), "--to", "hf-heads", "--out", str(tmp_path / "h.json")]) == 0
    assert json.loads((tmp_path / "h.json").read_text()) == {"0": [0, 2]}
    code = main(["export", "--plan", str(plan_path), "--to", "onnx", "--out", str(tmp_path / "x")])
    assert code == 2 and f"available: {', '.join(EXPORTS)}" in capsys.readouterr().err
    code = main(["export", "--plan", str(plan_path), "--to", "nni", "--out", str(tmp_path / "n.json")])
    assert code == 2 and "hf-heads or torch-pruning" in capsys.readouterr().err
    assert not (tmp_path / "n.json").exists()
    data = json.loads(plan_path.read_text())
    data["schema_version"] = 7
    plan_path.write_text(json.dumps(data))
    code = main(["export", "--plan", str(plan_path), "--to", "hf-heads", "--out", str(tmp_path / "h2.json")])
    assert code == 2 and "upgrade latency-planner" in capsys.readouterr().err
    assert isinstance(torch.__version__, str)


# ----- the real pruners on transformer plans --------------------------------------------------------
def _plan_at(adapter, pick):  # type: ignore[no-untyped-def]
    """A magnitude plan for ``adapter`` at the levels ``pick(unit) -> level index`` (a hand-made table)."""
    from planner.backends import get_backend
    from planner.stages.solve import solve_plan
    from tests.tiny_models import loaded_of, table_for

    loaded = loaded_of(adapter.model, adapter)
    backend = get_backend("magnitude")
    levels = [pick(u) for u in adapter.units()]
    return solve_plan(
        loaded=loaded,
        table=table_for(adapter, loaded.fingerprint),
        scores=backend.score(adapter, None),
        backend=backend,
        speedup=1.01,
        levels=levels,
    )


def _torch_pruning(plan, model, example, tmp_path: Path, forward_fn=None):  # type: ignore[no-untyped-def]
    export_plan(plan, "torch-pruning", tmp_path / "tp.json")
    namespace: dict[str, object] = {}
    exec(compile((tmp_path / "tp.py").read_text(), "tp.py", "exec"), namespace)  # the generated snippet, as is
    return namespace["prune"](model, example, str(tmp_path / "tp.json"), forward_fn=forward_fn)  # type: ignore[operator]


def _counts(plan, head_size: int, model):  # type: ignore[no-untyped-def]
    """Heads (from the query projection) and neurons per unit of a model cut by another tool."""
    modules = dict(model.named_modules())
    out = {}
    for unit in plan.units:
        if unit.kind == "attention":
            query = modules[unit.modules["query"]]
            out[unit.unit] = query.out_features // head_size
        else:
            out[unit.unit] = modules[unit.modules.get("gate", unit.modules["up"])].out_features
    return out


def _bert_forward(model, example):  # type: ignore[no-untyped-def]
    return model(input_ids=example[0], attention_mask=example[1])[0]


def _lm_forward(model, example):  # type: ignore[no-untyped-def]
    return model(input_ids=example[0], use_cache=False).logits


def test_torch_pruning_removes_exactly_the_plans_heads_and_neurons(tmp_path: Path) -> None:
    from tests.tiny_models import TINY_ADAPTERS

    adapter = TINY_ADAPTERS["bert"]()
    plan = _plan_at(adapter, lambda u: (1 + u.layer) if u.kind == "attention" else 2 + 3 * u.layer)
    example = adapter.example_inputs(2, 8)
    pruned = _torch_pruning(plan, adapter.model, example, tmp_path, forward_fn=_bert_forward)
    assert _counts(plan, adapter.head_size, pruned) == {c.unit: c.kept for c in plan.units}
    assert pruned(input_ids=example[0], attention_mask=example[1])[0].shape == (2, 8, 32)


def _tp_friendly_llama():  # type: ignore[no-untyped-def]
    """A tiny Llama with 3 query heads per KV group: Torch-Pruning 1.6's dependency graph never finishes
    for 2 per group (it loops in ``_fix_dependency_graph_non_recursive``; measured), 3 (SmolLM2) works."""
    import transformers

    from planner.models.decoder import decoder_adapter

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=120,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=80,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return decoder_adapter(transformers.LlamaForCausalLM(config).eval(), name="tp-llama", ffn_step=8)


def test_torch_pruning_cuts_decoder_mlps_exactly_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    from tests.tiny_models import TINY_ADAPTERS

    adapter = _tp_friendly_llama()
    grouped = _plan_at(adapter, lambda u: 1 if u.kind == "attention" else 0)
    with pytest.raises(PlannerError, match="grouped-query attention"):
        to_torch_pruning(grouped)
    removed = _plan_at(adapter, lambda u: len(u.levels) - 1 if u.kind == "ffn" else 0)
    with pytest.raises(PlannerError, match="cannot remove a whole block"):
        to_torch_pruning(removed)
    plan = _plan_at(adapter, lambda u: 0 if u.kind == "attention" else 1 + 2 * u.layer)
    example = adapter.example_inputs(1, 8)
    pruned = _torch_pruning(plan, adapter.model, example, tmp_path, forward_fn=_lm_forward)
    assert _counts(plan, adapter.head_size, pruned) == {c.unit: c.kept for c in plan.units}
    gpt2 = TINY_ADAPTERS["gpt2"]()
    with pytest.raises(PlannerError, match="Conv1D"):
        to_torch_pruning(_plan_at(gpt2, lambda u: 1))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_nni_masks_exactly_the_plans_neurons(family: str) -> None:
    nni_pruning = pytest.importorskip("nni.compression.pruning")
    from tests.tiny_models import TINY_ADAPTERS

    adapter = TINY_ADAPTERS[family]()
    plan = _plan_at(adapter, lambda u: 0 if u.kind == "attention" else 1 + 2 * u.layer)
    _, masks = nni_pruning.L1NormPruner(adapter.model, to_nni(plan)).compress()
    for unit in adapter.units():
        if unit.kind != "ffn":
            continue
        for role in ("gate", "up"):
            if role in unit.modules:
                rows = masks[unit.modules[role]]["weight"].sum(dim=1)
                assert int((rows != 0).sum()) == plan.choice(unit.name).kept


@pytest.mark.slow
def test_exports_cut_the_real_models_exactly(tmp_path: Path) -> None:
    """MiniLM at a uniform 2x shape (5 of 12 heads, 704 of 1536 neurons: Torch-Pruning used to keep
    every head and 703 neurons) and SmolLM2's MLPs, with Torch-Pruning and NNI as they are."""
    nni_pruning = pytest.importorskip("nni.compression.pruning")
    from planner.models import load_model

    minilm = load_model("minilm").adapter
    plan = _plan_at(minilm, lambda u: 7 if u.kind == "attention" else 13)
    assert {c.kept for c in plan.units} == {5, 704}
    example = minilm.example_inputs(2, 16)
    pruned = _torch_pruning(plan, load_model("minilm").model, example, tmp_path / "bert", forward_fn=_bert_forward)
    assert _counts(plan, minilm.head_size, pruned) == {c.unit: c.kept for c in plan.units}
    (tmp_path / "lm").mkdir()
    smol = load_model("smollm2").adapter
    mlp_plan = _plan_at(smol, lambda u: 0 if u.kind == "attention" else 1 + (u.layer or 0) % 20)
    pruned = _torch_pruning(
        mlp_plan, load_model("smollm2").model, smol.example_inputs(1, 8), tmp_path / "lm", forward_fn=_lm_forward
    )
    assert _counts(mlp_plan, smol.head_size, pruned) == {c.unit: c.kept for c in mlp_plan.units}
    with pytest.raises(PlannerError, match="grouped-query attention"):
        to_torch_pruning(_plan_at(smol, lambda u: 2 if u.kind == "attention" else 0))
    _, masks = nni_pruning.L1NormPruner(load_model("smollm2").model, to_nni(mlp_plan)).compress()
    for unit in smol.units():
        if unit.kind == "ffn":
            kept = int((masks[unit.modules["gate"]]["weight"].sum(dim=1) != 0).sum())
            assert kept == mlp_plan.choice(unit.name).kept
