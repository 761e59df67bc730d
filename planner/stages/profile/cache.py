"""The latency-table cache, keyed by everything a table depends on.

``planner run`` reuses a latency table measured for the same model fingerprint, level grid and
measurement settings, so an interrupted or repeated run resumes (error scores are cached by the score
stage, ``planner.stages.score``). Keys are short hashes of those inputs (``planner.paths.cache_key``);
files are written atomically by the records themselves.

A cached table is never trusted blindly:
- one measured on a busy machine (``meta.noisy``) is measured again unless ``accept_noisy``;
- a clean one is re-validated cheaply first: the dense model and two whole-model anchors are timed
  for a few rounds, and if their latencies relative to the dense model moved by more than
  ``REVALIDATION_TOLERANCE`` from the table's, the table is measured again (a re-validation that
  itself ran on a busy machine keeps the cached table and says so).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from planner.config import Measurement
from planner.models import LoadedModel
from planner.models.base import level_grid
from planner.models.phases import Shape, shape_of
from planner.paths import cache_key
from planner.stages.profile.measure import DENSE_KEY, anchor_levels, profile_model
from profilers import SCHEMA_VERSION, LatencyTable, Profiler, Workload

REVALIDATION_TOLERANCE = 0.05
"""A cached table is measured again when an anchor's latency relative to the dense model moved by
more than this (5%) since it was profiled."""
REVALIDATION_FRACTIONS = (0.5, 0.95)


@dataclass(frozen=True)
class ProfiledTable:
    """A table and how the profile stage got it: "measured", "reused", "re-measured" (the note says
    why), or "reused (noisy)" when the user accepted a noisy cached table."""

    table: LatencyTable
    status: str
    note: str | None = None


def table_path(cache_dir: Path, loaded: LoadedModel, measurement: Measurement, smoothing: str) -> Path:
    """Where the table for this model, grid and measurement is cached (sampling limits left out)."""
    what = dataclasses.replace(measurement, max_rounds=None, stability=0.0, max_seconds=None)
    key = cache_key(SCHEMA_VERSION, loaded.fingerprint, level_grid(loaded.adapter), what, smoothing)
    return cache_dir / "tables" / f"table-{key}.csv"


def cached_table(
    loaded: LoadedModel,
    measurement: Measurement,
    *,
    smoothing: str,
    cache_dir: Path,
    accept_noisy: bool = False,
    progress: bool = True,
) -> ProfiledTable:
    """The profile stage with the cache (see the module docstring for when a cached table is reused)."""
    path = table_path(cache_dir, loaded, measurement, smoothing)
    note = None
    if path.exists():
        cached = LatencyTable.load(path, expected_fingerprint=loaded.fingerprint)
        if cached.meta.noisy and accept_noisy:
            return ProfiledTable(cached, "reused (noisy)", "a cached table whose timings were noisy, accepted")
        if cached.meta.noisy:
            note = "the cached table's timings were noisy (a busy machine or a jittery one); measured again"
        else:
            drift = revalidate(loaded, cached, measurement)
            if drift is None:
                return ProfiledTable(cached, "reused", "re-validation skipped: the machine is busy now")
            if drift <= REVALIDATION_TOLERANCE:
                return ProfiledTable(cached, "reused", f"re-validated: anchors within {100 * drift:.1f}% of the table")
            note = (
                f"the cached table moved by {100 * drift:.1f}% (re-validated against the dense model); measured again"
            )
    table = profile_model(loaded, measurement, smoothing=smoothing, out=path, progress=progress, reuse=False)
    return ProfiledTable(table, "re-measured" if note else "measured", note)


def revalidate(loaded: LoadedModel, table: LatencyTable, measurement: Measurement) -> float | None:
    """How far whole-model anchors moved relative to the dense model since ``table`` was measured:
    the largest ``|(anchor / dense now) / (anchor / dense then) - 1|``; 0 when there is nothing to
    compare, None when the machine is busy now (the check cannot be trusted)."""
    adapter = loaded.adapter
    then = table.meta.anchor_ms
    if not adapter.supports_shrinking or measurement.phase == "generate" or DENSE_KEY not in then:
        return 0.0
    shape: Shape = shape_of(measurement)
    units = adapter.units()
    dense_module, dense_inputs = adapter.timed(adapter.model, shape)
    workloads = [Workload(DENSE_KEY, dense_module, dense_inputs, steady=True)]
    for fraction in REVALIDATION_FRACTIONS:
        key = f"__anchor_{fraction:g}__"
        if key in then:
            module, inputs = adapter.timed(adapter.shrink_to_levels(anchor_levels(units, fraction)), shape)
            workloads.append(Workload(key, module, inputs, steady=True))
    quick = dataclasses.replace(measurement, rounds=5, max_rounds=10, max_seconds=None)
    now = Profiler(quick.profiler_settings()).measure(workloads, progress=False, description="re-validating table")
    if now.noisy_rounds > now.rounds // 2:
        return None
    dense_now, dense_then = now[DENSE_KEY].estimate_ms, then[DENSE_KEY]
    moved = [
        abs((now[w.key].estimate_ms / dense_now) / (then[w.key] / dense_then) - 1.0)
        for w in workloads
        if w.key != DENSE_KEY
    ]
    return max(moved, default=0.0)


__all__ = ["ProfiledTable", "cached_table", "revalidate", "table_path"]
