"""Saving and loading pruned models: ``model.safetensors`` + ``pruned_config.json`` in a folder.

The config records the architecture, the base (dense) config, how many heads and neurons every
layer kept, the classification head (if any) and the plan, so ``load_pruned(DIR)`` rebuilds the
same shapes and loads the weights, giving outputs identical to the in-memory pruned model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.errors import PlannerError
from planner.models.bert import BertAdapter, find_bert
from planner.models.bert_surgery import attention_heads, ffn_neurons
from planner.plan import Plan
from profilers.atomic import atomic_dir

FORMAT = "latency-planner-pruned"
FORMAT_VERSION = 1


def encoder_of(model: nn.Module) -> Any:
    """The BertModel inside a BertModel, BertFor* or MeanPoolClassifier."""
    if isinstance(model, _classifier_type()):
        return model.encoder
    return find_bert(model)[0]


def _structure(model: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    bert = encoder_of(model)
    heads = {str(i): attention_heads(layer.attention) for i, layer in enumerate(bert.encoder.layer)}
    neurons = {str(i): ffn_neurons(layer) for i, layer in enumerate(bert.encoder.layer)}
    return heads, neurons


def _classifier_type() -> type:
    from planner.classifier import MeanPoolClassifier

    return MeanPoolClassifier


def save_pruned(model: nn.Module, out_dir: str | Path, *, plan: Plan, overwrite: bool = False) -> Path:
    """Write a pruned BERT-family model (BertModel, BertFor*, MeanPoolClassifier) to ``out_dir``.

    The folder is written to a temporary sibling and renamed, so a failure leaves nothing behind.
    """
    from safetensors.torch import save_file

    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    is_classifier = isinstance(model, _classifier_type())
    bert = encoder_of(model)
    heads, neurons = _structure(model)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "bert",
        "model_class": type(model).__name__,
        "base_config": bert.config.to_dict(),
        "heads": heads,
        "neurons": neurons,
        "plan": json.loads(plan.to_json()),
    }
    if is_classifier:
        head: Any = model.head
        config["classifier_head"] = {"in_features": head.in_features, "classes": head.out_features}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(target, overwrite=True) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "pruned_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild a model saved by ``save_pruned`` (eval mode)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder = Path(path)
    config_path = folder / "pruned_config.json"
    if not config_path.is_file() or not (folder / "model.safetensors").is_file():
        raise PlannerError(f"{folder} is not a pruned model folder (needs pruned_config.json and model.safetensors).")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlannerError(f"{config_path} is not valid JSON ({exc}).") from None
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise PlannerError(f"{config_path} is not a {FORMAT} v{FORMAT_VERSION} file; re-run `planner apply`.")
    base = BertConfig.from_dict(config["base_config"])
    model_class = config["model_class"]
    model: nn.Module
    if model_class == "BertForSequenceClassification":
        model = BertForSequenceClassification(base)
    elif model_class == "MeanPoolClassifier":
        from planner.classifier import MeanPoolClassifier

        head = config["classifier_head"]
        pooler = "encoder.pooler.dense.weight" in _keys(folder)
        linear = nn.Linear(head["in_features"], head["classes"])
        model = MeanPoolClassifier(BertModel(base, add_pooling_layer=pooler), linear)
    elif model_class == "BertModel":
        model = BertModel(base, add_pooling_layer="pooler.dense.weight" in _keys(folder))
    else:
        raise PlannerError(f"{config_path}: unsupported model class {model_class!r}.")
    heads = {int(k): range(v) for k, v in config["heads"].items()}
    neurons = {int(k): range(v) for k, v in config["neurons"].items()}
    if isinstance(model, _classifier_type()):
        model.encoder = BertAdapter(encoder_of(model), name="pruned").shrink(heads, neurons)
    else:
        model = BertAdapter(model, name="pruned").shrink(heads, neurons)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PlannerError(
            f"{folder}: weights do not match the recorded structure (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})."
        )
    return model.eval()


def _keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return set(fh.keys())


def export_onnx_model(model: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """Export a (pruned) BERT-family model to ONNX for ONNX Runtime, batch and sequence dynamic."""
    import warnings

    from planner.models.base import OutputTensor
    from profilers.atomic import atomic_path

    wrapper = model if isinstance(model, _classifier_type()) else OutputTensor(model, ("input_ids", "attention_mask"))
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper.eval(),
            example,
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["output"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    return Path(path)
