"""Settings, at the bottom of the planner: the run configuration and the typed records derived from it.

- ``run``: ``RunConfig`` (every user-facing setting, its default and its constraint, validated before
  any work) and the choices of each setting;
- ``settings``: the records stages receive (``Measurement``, ``LevelGrid``, ``SearchSettings``,
  ``ExecutorSettings``, ``RecoverySettings``);
- ``quality``: the quality limit (``--max-loss`` or the default guard);
- ``specs``: model specs parsed without loading (``spec_kind``, ``spec_family``).

May import: ``planner.errors``, ``planner.params``, ``planner.paths``, and ``profilers`` (runtime
names); nothing else of the planner's.
"""

from __future__ import annotations

from planner.config.quality import QualityLimit, parse_max_loss
from planner.config.run import (
    BACKEND_NAMES,
    DEFAULT_SEARCH,
    EXECUTION_CHOICES,
    EXECUTORS,
    PHASES,
    RECOVER_LORA_LR,
    RECOVER_LR,
    RECOVER_VALIDATION,
    SEARCH_OBJECTIVES,
    SEARCHES,
    SMOOTHING,
    TASK_CHOICES,
    RunConfig,
)
from planner.config.settings import ExecutorSettings, LevelGrid, Measurement, RecoverySettings, SearchSettings
from planner.config.specs import spec_family, spec_kind
from planner.paths import DEFAULT_CACHE

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_CACHE",
    "DEFAULT_SEARCH",
    "EXECUTION_CHOICES",
    "EXECUTORS",
    "PHASES",
    "RECOVER_LORA_LR",
    "RECOVER_LR",
    "RECOVER_VALIDATION",
    "SEARCHES",
    "SEARCH_OBJECTIVES",
    "SMOOTHING",
    "TASK_CHOICES",
    "ExecutorSettings",
    "LevelGrid",
    "Measurement",
    "QualityLimit",
    "RecoverySettings",
    "RunConfig",
    "SearchSettings",
    "parse_max_loss",
    "spec_family",
    "spec_kind",
]
