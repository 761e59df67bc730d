"""Model adapters: units and levels, example inputs, standalone workloads, structured surgery."""

from planner.models.base import ModelAdapter, UnitWorkload
from planner.models.bert import BertAdapter
from planner.models.generic import GenericAdapter
from planner.models.loading import BUNDLED, LoadedModel, load_model, minilm_path
from planner.models.units import Level, Unit

__all__ = [
    "BUNDLED",
    "BertAdapter",
    "GenericAdapter",
    "Level",
    "LoadedModel",
    "ModelAdapter",
    "Unit",
    "UnitWorkload",
    "load_model",
    "minilm_path",
]
