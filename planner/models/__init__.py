"""Model adapters: units and levels, example inputs, standalone workloads, structured surgery.

``ADAPTERS`` maps a family name (``architecture``) to its adapter class; ``dense_skeleton`` builds a
family's dense model with random weights from a saved config (what ``load_pruned`` shrinks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from planner.models.base import ModelAdapter, UnitWorkload
from planner.models.bert import BertAdapter
from planner.models.generic import GenericAdapter
from planner.models.loading import BUNDLED, LoadedModel, load_model, minilm_path, spec_kind
from planner.models.transformer import TransformerAdapter
from planner.models.units import Level, Unit

ADAPTERS: dict[str, type[TransformerAdapter]] = {"bert": BertAdapter}


def dense_skeleton(architecture: str, model_class: str, base_config: Mapping[str, Any], keys: set[str]) -> nn.Module:
    """A dense model of the saved family and class, built from its config (random weights).

    Args:
        keys: the saved state's keys (whether a BERT pooler was saved).
    """
    if architecture == "bert":
        from transformers import BertConfig, BertForSequenceClassification, BertModel

        config = BertConfig.from_dict(dict(base_config))
        if model_class == "BertForSequenceClassification":
            return BertForSequenceClassification(config)
        if model_class == "BertModel":
            return BertModel(config, add_pooling_layer=any(k.endswith("pooler.dense.weight") for k in keys))
    raise ValueError(f"cannot rebuild a {architecture} model of class {model_class!r}")


__all__ = [
    "ADAPTERS",
    "BUNDLED",
    "BertAdapter",
    "GenericAdapter",
    "Level",
    "LoadedModel",
    "ModelAdapter",
    "TransformerAdapter",
    "Unit",
    "UnitWorkload",
    "dense_skeleton",
    "load_model",
    "minilm_path",
    "spec_kind",
]
