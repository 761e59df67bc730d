"""``ErrorTable``: unit x level -> estimated loss, the record the score stage hands the solvers.

Saved as one ``.npz`` file (written atomically): the arrays, plus a JSON ``__meta__`` entry with the
schema version, the unit names, the method and the provenance (model fingerprint, backend, task,
data, calibration size, sequence length, seed). Loading checks the version and every array.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import PlannerError

ERROR_TABLE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ErrorTable:
    """unit x level -> estimated loss, plus per-unit importance for choosing what to keep.

    Attributes:
        units: unit names in table order.
        errors: per unit, (n_levels,) estimated loss of each level (level 0 = dense = 0).
        importance: per structured unit, (units,) importance of each head/neuron (higher = keep).
        method: how errors were estimated (documented per backend).
        extra: backend-specific arrays (e.g. per-batch gradients for rearrangement), by name.
        provenance: model fingerprint, backend, task, data, calibration size, seq_len, seed, created.
    """

    units: tuple[str, ...]
    errors: tuple[np.ndarray, ...]
    importance: Mapping[str, np.ndarray]
    method: str
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = ERROR_TABLE_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if len(self.units) != len(self.errors):
            raise ValueError(
                f"an error table needs one error array per unit ({len(self.units)}); got {len(self.errors)}"
            )
        for name, errors in zip(self.units, self.errors, strict=True):
            if np.asarray(errors).ndim != 1 or not np.all(np.isfinite(errors)):
                raise ValueError(f"unit {name}: errors must be a finite 1-D array over levels")

    def unit_errors(self) -> list[np.ndarray]:
        """Per unit, a copy of its error array (what solvers take)."""
        return [np.asarray(e, dtype=np.float64).copy() for e in self.errors]

    def save(self, path: str | Path) -> Path:
        """Write the table to ``.npz`` atomically."""
        from profilers.atomic import atomic_path

        arrays: dict[str, Any] = {f"errors_{i}": np.asarray(e) for i, e in enumerate(self.errors)}
        arrays.update({f"importance::{k}": np.asarray(v) for k, v in self.importance.items()})
        arrays.update({f"extra::{k}": np.asarray(v) for k, v in self.extra.items()})
        meta = {
            "schema_version": self.schema_version,
            "units": list(self.units),
            "method": self.method,
            "provenance": dict(self.provenance),
        }
        target = Path(path)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, default=str)), **arrays)
        return target

    @classmethod
    def load(cls, path: str | Path) -> ErrorTable:
        """Read a table written by ``save``; a file of another schema version is an error."""
        source = Path(path)
        if not source.is_file():
            raise PlannerError(f"error table {source} does not exist; score the model again.")
        try:
            with np.load(source, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                if meta.get("schema_version") != ERROR_TABLE_SCHEMA_VERSION:
                    raise PlannerError(
                        f"{source} has error-table schema version {meta.get('schema_version')!r}; this planner reads "
                        f"{ERROR_TABLE_SCHEMA_VERSION}. Delete it to score again."
                    )
                units = tuple(meta["units"])
                errors = tuple(data[f"errors_{i}"] for i in range(len(units)))
                importance = {k.split("::", 1)[1]: data[k] for k in data.files if k.startswith("importance::")}
                extra = {k.split("::", 1)[1]: data[k] for k in data.files if k.startswith("extra::")}
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, PlannerError):
                raise
            raise PlannerError(f"{source} is not a readable error table ({exc}); delete it to score again.") from None
        return cls(units, errors, importance, meta["method"], extra, meta.get("provenance", {}))


def error_provenance(*, fingerprint: str, backend: str, task: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an error table depends on (recorded in it): the model, the backend and the task's data."""
    return {
        "model_fingerprint": fingerprint,
        "backend": backend,
        **({} if task is None else dict(task)),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
