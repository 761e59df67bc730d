"""Model adapters: units and levels, example inputs, standalone workloads, structured surgery.

``ADAPTERS`` maps a family name (``architecture``) to its adapter class; ``dense_skeleton`` builds a
family's dense model with random weights from a saved config (what ``load_pruned`` shrinks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from planner.config.specs import spec_kind
from planner.models.base import ModelAdapter, UnitWorkload
from planner.models.bert import BertAdapter
from planner.models.decoder import GPT2Adapter, LlamaAdapter
from planner.models.generic import GenericAdapter
from planner.models.gguf_workloads import decoder_workload  # registers decoders with --runtime llama.cpp
from planner.models.loading import BUNDLED, LoadedModel, load_model, minilm_path
from planner.models.transformer import TransformerAdapter
from planner.models.units import Level, Unit

ADAPTERS: dict[str, type[TransformerAdapter]] = {"bert": BertAdapter, "llama": LlamaAdapter, "gpt2": GPT2Adapter}


def dense_skeleton(architecture: str, model_class: str, base_config: Mapping[str, Any], keys: set[str]) -> nn.Module:
    """A dense model of the saved family and class (a transformers class name), built from its config
    with random weights.

    Args:
        keys: the saved state's keys (whether a BERT pooler was saved).
    """
    import transformers

    cls = getattr(transformers, model_class, None)
    if cls is None or architecture not in ADAPTERS:
        raise ValueError(f"cannot rebuild a {architecture} model of class {model_class!r}")
    values = {k: v for k, v in base_config.items() if k != "quantization_config"}
    config = cls.config_class.from_dict(values)
    if model_class == "BertModel":
        return cls(config, add_pooling_layer=any(k.endswith("pooler.dense.weight") for k in keys))
    return cls(config).eval()


__all__ = [
    "ADAPTERS",
    "BUNDLED",
    "BertAdapter",
    "GPT2Adapter",
    "GenericAdapter",
    "Level",
    "LlamaAdapter",
    "LoadedModel",
    "ModelAdapter",
    "TransformerAdapter",
    "Unit",
    "UnitWorkload",
    "decoder_workload",
    "dense_skeleton",
    "load_model",
    "minilm_path",
    "spec_kind",
]
