"""GGUF files -> a plain Hugging Face safetensors folder, converted once and cached.

transformers reads GGUF (with the ``gguf`` package) and dequantizes the weights to float32; that
takes tens of seconds and the loaded model cannot be saved as it is (its config carries a
``quantization_config``). So the file is loaded once, a fresh model is built from the config without
it, the dequantized weights are loaded into it, and the model and tokenizer are saved to
``<cache>/models/<stem>-<key>/`` through a temporary folder renamed at the end (nothing half-written
is left). The key hashes the file's bytes, so a changed file converts again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from planner.errors import PlannerError, UnsupportedModelError
from planner.process import hf_quiet
from profilers.atomic import atomic_dir


def file_key(path: Path) -> str:
    """16 hex characters of the file's SHA-256 (names its cached conversion)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def converted_folder(gguf: Path, *, cache_dir: Path | None = None) -> Path:
    """The cached safetensors folder of ``gguf``, converting it the first time.

    Raises:
        PlannerError: the file cannot be read as GGUF, or holds an architecture transformers or the
            planner cannot load (the message names it and the fix).
    """
    from planner.paths import DEFAULT_CACHE

    root = (cache_dir or DEFAULT_CACHE) / "models"
    folder = root / f"{gguf.stem}-{file_key(gguf)}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    with hf_quiet():
        model, tokenizer = _read_gguf(gguf)
        with atomic_dir(folder, overwrite=True) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    return folder


def _read_gguf(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from planner.config.specs import LLAMA_FAMILY
    from planner.models.decoder import SUPPORTED_DECODERS

    folder, name = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # transformers raises many types for unreadable GGUF files
        raise PlannerError(
            f"transformers cannot read the GGUF file {gguf} ({type(exc).__name__}: {exc}); check that it is a "
            "complete GGUF file of a supported architecture (pip install gguf accelerate), or convert the model to "
            "a Hugging Face folder and pass that folder."
        ) from None
    if config.model_type not in LLAMA_FAMILY and config.model_type != "gpt2":
        raise UnsupportedModelError(
            f"unsupported architecture {config.model_type!r} in {gguf}; supported decoders: {SUPPORTED_DECODERS}."
        )
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:
        raise PlannerError(
            f"transformers could not load the weights in {gguf} ({type(exc).__name__}: {exc}); check the file, "
            "or convert the model to a Hugging Face folder and pass that folder."
        ) from None
    clean = loaded.config
    if hasattr(clean, "quantization_config"):
        del clean.quantization_config
    model = AutoModelForCausalLM.from_config(clean, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    return model.eval(), tokenizer
