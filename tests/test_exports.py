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
from planner.report.exports import EXPORTS, export_plan, to_hf_heads, to_llmcompressor, to_nni, to_torch_ao
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
