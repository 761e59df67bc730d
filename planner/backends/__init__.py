"""Pruning backends: score units (error tables), choose what to keep, apply plans for real."""

from __future__ import annotations

from planner.backends.base import Backend
from planner.backends.fisher import FisherBackend
from planner.backends.magnitude import MagnitudeBackend
from planner.errors import PlannerError
from planner.records.error_table import ErrorTable

BACKENDS: dict[str, type] = {"fisher": FisherBackend, "magnitude": MagnitudeBackend}


def get_backend(name: str, **options: object) -> Backend:
    """A backend by name; unknown names list the available ones."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise PlannerError(
            f"The 'backend' parameter must be one of {', '.join(BACKENDS)}. Got {name!r} instead."
        ) from None
    backend: Backend = cls(**options)
    return backend


__all__ = ["BACKENDS", "Backend", "ErrorTable", "FisherBackend", "MagnitudeBackend", "get_backend"]
