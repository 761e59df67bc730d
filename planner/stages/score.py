"""The score stage: the backend's error table (unit x level -> estimated loss), cached on disk.

``cached_scores`` reuses scores computed for the same model, backend, level grid and (if the backend
uses it) task data, so a repeated or interrupted run does not score again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from planner.backends import Backend
from planner.models import LoadedModel
from planner.models.base import level_grid
from planner.paths import cache_key
from planner.records.error_table import ERROR_TABLE_SCHEMA_VERSION, ErrorTable, error_provenance
from planner.tasks.base import Task


def score_units(backend: Backend, loaded: LoadedModel, task: Task | None) -> ErrorTable:
    """The score stage: the backend's error table, with its provenance recorded."""
    scores = backend.score(loaded.adapter, task if backend.needs_task else None)
    provenance = error_provenance(
        fingerprint=loaded.fingerprint, backend=backend.name, task=None if task is None else task.provenance()
    )
    return dataclasses.replace(scores, provenance=provenance)


def cached_scores(backend: Backend, loaded: LoadedModel, task: Task | None, *, cache_dir: Path) -> ErrorTable:
    """The score stage with the cache (keyed by the model, the backend and, if it uses it, the task's data)."""
    data = task.provenance() if (backend.needs_task and task is not None) else None
    key = cache_key(ERROR_TABLE_SCHEMA_VERSION, loaded.fingerprint, backend.name, level_grid(loaded.adapter), data)
    path = cache_dir / "scores" / f"{backend.name}-{key}.npz"
    if path.is_file():
        return ErrorTable.load(path)
    scores = score_units(backend, loaded, task)
    scores.save(path)
    return scores


__all__ = ["cached_scores", "score_units"]
