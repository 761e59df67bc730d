"""Saving and loading pruned models: ``model.safetensors`` + ``pruned_config.json`` in a folder.

The config records the family, the base (dense) Hugging Face config, how many heads (and KV groups)
and neurons every unit kept, the classification head (if any) and the plan, so ``load_pruned(DIR)``
rebuilds the same shapes and loads the weights, giving outputs identical to the in-memory pruned
model. Stock Hugging Face configs cannot hold per-layer head and neuron counts; this format can.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from planner.errors import PlannerError
from planner.records.plan import Plan
from profilers.atomic import atomic_dir, atomic_path

if TYPE_CHECKING:
    from planner.models import LoadedModel

FORMAT = "latency-planner-pruned"
FORMAT_VERSION = 2


def base_config(loaded: LoadedModel) -> dict[str, Any]:
    """The dense model's Hugging Face config as a dict (what a pruned model is rebuilt from)."""
    config = getattr(loaded.model, "config", None)
    return config.to_dict() if config is not None else {}


def backbone_of(model: nn.Module) -> nn.Module:
    """The adapter-level model inside a deployable one (a fitted-head classifier's encoder)."""
    from planner.tasks.fitted_head import MeanPoolClassifier

    return model.encoder if isinstance(model, MeanPoolClassifier) else model


def save_pruned(
    model: nn.Module,
    out_dir: str | Path,
    *,
    plan: Plan,
    shape: Mapping[str, Mapping[str, int | None]],
    base_config: Mapping[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a pruned model (the deployable module: the model itself or a fitted-head classifier).

    Args:
        shape: unit -> {"kept", "groups"} of the pruned backbone (``adapter.kept_shape(pruned)``).
        base_config: the dense model's Hugging Face config (``config.to_dict()``).

    The folder is written to a temporary sibling and renamed, so a failure leaves nothing behind.
    """
    from safetensors.torch import save_file

    from planner.tasks.fitted_head import MeanPoolClassifier

    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    backbone = backbone_of(model)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": plan.architecture,
        "model_class": type(model).__name__,
        "backbone_class": type(backbone).__name__,
        "base_config": dict(base_config),
        "units": {name: dict(entry) for name, entry in shape.items()},
        "plan": plan.to_dict(),
    }
    if isinstance(model, MeanPoolClassifier):
        config["classifier_head"] = {"in_features": model.head.in_features, "classes": model.head.out_features}
    # Tied weights (e.g. decoder embeddings and LM head) are stored once; loading re-ties them.
    state = {}
    seen: dict[int, str] = {}
    for key, value in model.state_dict().items():
        if value.data_ptr() in seen and value.numel() > 0:
            continue
        seen[value.data_ptr()] = key
        state[key] = value.detach().contiguous().clone()
    with atomic_dir(target, overwrite=True) as tmp:
        with atomic_path(tmp / "model.safetensors") as weights:  # umask permissions (safetensors makes 0600)
            save_file(state, str(weights))
        (tmp / "pruned_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def read_pruned_config(path: str | Path) -> dict[str, Any]:
    """The ``pruned_config.json`` of a pruned model folder (validated format)."""
    folder = Path(path)
    config_path = folder / "pruned_config.json"
    if not config_path.is_file() or not (folder / "model.safetensors").is_file():
        raise PlannerError(f"{folder} is not a pruned model folder (needs pruned_config.json and model.safetensors).")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlannerError(f"{config_path} is not valid JSON ({exc}).") from None
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise PlannerError(f"{config_path} is not a {FORMAT} v{FORMAT_VERSION} file; re-run `planner apply`.")
    return config


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild a model saved by ``save_pruned`` (eval mode), with the weights it was saved with."""
    from safetensors.torch import load_file

    from planner.models import ADAPTERS, dense_skeleton

    folder = Path(path)
    config = read_pruned_config(folder)
    architecture = config["architecture"]
    if architecture not in ADAPTERS:
        raise PlannerError(f"{folder}: unsupported architecture {architecture!r}; supported: {', '.join(ADAPTERS)}.")
    keys = _keys(folder)
    backbone = dense_skeleton(architecture, config["backbone_class"], config["base_config"], keys)
    adapter = ADAPTERS[architecture](backbone, name="pruned")
    restore_biases(adapter, keys)
    pruned = adapter.shrink_to_shape(config["units"])
    model: nn.Module = pruned
    if config["model_class"] == "MeanPoolClassifier":
        from planner.tasks.fitted_head import MeanPoolClassifier

        head = config["classifier_head"]
        model = MeanPoolClassifier(pruned, nn.Linear(head["in_features"], head["classes"]))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _tied(model, k)]
    if missing or unexpected:
        raise PlannerError(
            f"{folder}: weights do not match the recorded structure (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})."
        )
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    return model.eval()


def restore_biases(adapter: Any, keys: set[str]) -> None:
    """Give the skeleton's output projections the biases bias compensation added to the saved model
    (zeros, overwritten by the saved values): the dense config declares none. The saved key is the
    projection's (``...o_proj.bias``) or, for a block emptied by the cut, the empty block's
    (``...self_attn.bias``)."""
    from planner.backends.base import structured_units
    from planner.backends.tuning import add_bias, output_projection

    names = {id(module): name for name, module in adapter.model.named_modules()}
    for unit in structured_units(adapter):
        projection = output_projection(adapter, unit)
        if getattr(projection, "bias", None) is not None:
            continue
        name = names[id(projection)]
        wanted = (f"{name}.bias", f"{name.rsplit('.', 1)[0]}.bias")
        if any(key == w or key.endswith("." + w) for key in keys for w in wanted):
            weight = projection.get_parameter("weight")
            add_bias(projection, torch.zeros(weight.shape[0], dtype=weight.dtype))


def _tied(model: nn.Module, key: str) -> bool:
    """Whether a missing key is a weight tied to another (restored by ``tie_weights``)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    names = tied if isinstance(tied, (list, tuple, set)) else list(tied)
    return any(key == n or key.endswith("." + n) for n in names)


def _keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return set(fh.keys())


def export_onnx_model(
    model: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path, *, input_names: tuple[str, ...]
) -> Path:
    """Export a (pruned) model's first output to ONNX, batch and sequence dynamic (prefill for LMs)."""
    import warnings

    from planner.models.base import OutputTensor

    wrapper = OutputTensor(model, input_names)
    axes = {name: {0: "batch", 1: "seq"} for name in input_names}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper.eval(),
            example,
            str(tmp),
            input_names=list(input_names),
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return Path(path)
