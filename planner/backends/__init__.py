"""Pruning backends: score units (error tables), choose what to keep, apply plans for real."""

from __future__ import annotations

from planner.backends.base import Backend
from planner.backends.depth import DepthBackend
from planner.backends.fisher import FisherBackend
from planner.backends.flap import FlapBackend
from planner.backends.magnitude import MagnitudeBackend
from planner.errors import PlannerError
from planner.records.error_table import ErrorTable

BACKENDS: dict[str, type] = {"fisher": FisherBackend, "magnitude": MagnitudeBackend}

PEER_BACKENDS: dict[str, type] = {"depth": DepthBackend, "flap": FlapBackend}
"""The scoring and applying of the methods ``planner sweep`` compares the planner with (ShortGPT's depth
pruning, FLAP); not offered to ``planner run`` / ``apply``."""


def get_backend(name: str, **options: object) -> Backend:
    """A backend (or a sweep peer's) by name; unknown names list the available ones."""
    try:
        cls = {**BACKENDS, **PEER_BACKENDS}[name]
    except KeyError:
        raise PlannerError(
            f"The 'backend' parameter must be one of {', '.join(BACKENDS)}. Got {name!r} instead."
        ) from None
    backend: Backend = cls(**options)
    return backend


__all__ = [
    "BACKENDS",
    "PEER_BACKENDS",
    "Backend",
    "DepthBackend",
    "ErrorTable",
    "FisherBackend",
    "FlapBackend",
    "MagnitudeBackend",
    "get_backend",
]
