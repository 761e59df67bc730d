"""The on-disk cache of a run's slow stages, keyed by everything each result depends on.

``planner run`` reuses a latency table measured for the same model fingerprint, level grid and
measurement settings, and error scores computed for the same model, backend and task data, so an
interrupted or repeated run resumes. Keys are short hashes of those inputs; files are written
atomically by the records themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from planner.backends import Backend
from planner.config import Measurement
from planner.models import LoadedModel
from planner.profile import level_grid, profile_model
from planner.records.error_table import ERROR_TABLE_SCHEMA_VERSION, ErrorTable, error_provenance
from planner.tasks.base import Task
from profilers import SCHEMA_VERSION, LatencyTable


def cache_key(*parts: Any) -> str:
    """16 hex characters identifying ``parts`` (dataclasses and mappings by content)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def table_path(cache_dir: Path, loaded: LoadedModel, measurement: Measurement, smoothing: str) -> Path:
    """Where the table for this model, grid and measurement is cached."""
    key = cache_key(SCHEMA_VERSION, loaded.fingerprint, level_grid(loaded.adapter), measurement, smoothing)
    return cache_dir / "tables" / f"table-{key}.csv"


def cached_table(
    loaded: LoadedModel, measurement: Measurement, *, smoothing: str, cache_dir: Path, progress: bool = True
) -> LatencyTable:
    """The profile stage with the cache: a matching cached table, else a fresh (resumable) profile."""
    path = table_path(cache_dir, loaded, measurement, smoothing)
    return profile_model(loaded, measurement, smoothing=smoothing, out=path, progress=progress, reuse=True)


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
