"""Pruning backends: score units (error tables), choose what to keep, apply plans for real."""

from __future__ import annotations

from planner.backends.base import Backend, Calibration, ErrorTable
from planner.backends.fisher import FisherBackend
from planner.backends.magnitude import MagnitudeBackend
from planner.errors import PlannerError

BACKENDS: dict[str, type] = {"fisher": FisherBackend, "magnitude": MagnitudeBackend}


def get_backend(name: str, **options: object) -> Backend:
    """A backend by name; unknown names list the available ones."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise PlannerError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}") from None
    backend: Backend = cls(**options)
    return backend


__all__ = ["BACKENDS", "Backend", "Calibration", "ErrorTable", "FisherBackend", "MagnitudeBackend", "get_backend"]
