"""latency-planner: measured latency tables, speedup-constrained plans, real shrinking, verification.

Importing ``planner`` is cheap; heavy modules (transformers, onnxruntime, matplotlib) load on use.
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError, UnsupportedModelError
from planner.version import __version__

_LAZY = {
    "RunConfig": "planner.config",
    "profile_model": "planner.stages.profile",
    "load_model": "planner.models",
    "LatencyTable": "profilers",
    "Plan": "planner.records.plan",
    "load_pruned": "planner.stages.apply",
    "create_plan": "planner.workflows",
    "apply_plan": "planner.workflows",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


__all__ = [
    "LatencyTable",
    "Plan",
    "PlannerError",
    "RunConfig",
    "UnsupportedModelError",
    "__version__",
    "apply_plan",
    "create_plan",
    "load_model",
    "load_pruned",
    "profile_model",
]
