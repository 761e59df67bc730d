"""``LatencyTable``: unit x level -> measured ms on one device/runtime/shape, plus the fixed part.

Saved as a CSV (one row per unit and level) and a JSON sidecar (same stem, ``.json``) holding the
metadata; both written atomically. The prediction is additive in the units, then calibrated:

    predicted_ms = g(sum over units of latency_ms[unit, chosen level])

where g is the calibration curve through whole models measured end to end (see
``profilers.calibration``; without anchors g(S) = fixed_ms + S, SPDY's model). ``fixed_ms`` is
g(0): everything not searched (embeddings, norms, pooler, framework overhead).

A table whose ``cost_model`` is "context" plans with each unit's cost in the whole model instead
(``context_ms``, see ``profilers.context``), and its g is ``fixed_ms + S``:

    predicted_ms = fixed_ms + sum over units of context_ms[unit, chosen level]

CSV columns (one row per unit and level, units in model order, levels 0 = dense first):
    unit           unit name, e.g. "encoder.layer.0.attention"
    kind           "attention", "ffn", "linear" or "conv2d"
    level          level index within the unit (0 = dense)
    structure      "dense", "heads", "neurons", "channels", "unstructured" or "2:4"
    kept           heads (query heads) / neurons / output channels kept (empty for weight sparsity)
    groups         key/value groups kept (grouped-query attention), else empty
    sparsity       fraction of weights that are zero (empty for structured levels)
    latency_ms     standalone latency used for planning (the p10 estimate; smoothed when asked), ms
    raw_ms         the measured p10 estimate before smoothing, ms
    ci_low_ms, ci_high_ms  95% interval of that estimate, ms
    median_ms, p10_ms, p90_ms  median and percentiles of the samples, ms
    repeats        samples the estimate used (quiet rounds)
    noisy_rounds   samples left out because other processes kept the machine busy
    impl           implementation timed: "dense", "shrunk", "masked", "csr", "semi_structured"
    masked_ms      estimate of the dense kernel on masked weights (sparsity levels), ms
    sparse_ms      estimate of the sparse kernel where one exists (sparsity levels), ms
    signature      shape signature; units with equal signatures share measurements
    context_ms     the level's cost inside the whole model (ms), planned with when ``cost_model`` is
                   "context"; empty otherwise
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profilers.atomic import atomic_path, atomic_write_text
from profilers.calibration import CalibrationCurve
from profilers.context import BASES
from profilers.errors import TableFormatError
from profilers.heap import AS_FOUND, HEAP_STATES
from profilers.width_model import WidthModel

SCHEMA_VERSION = 9
READABLE_VERSIONS = (3, 4, 5, 6, 7, 8, 9)
"""Version 9 records the C heap the samples ran on (``heap``: "settled" where glibc's thresholds were
raised before timing, ``profilers.heap``); older tables were timed on the heap "as found".
Version 8 prices memory-bound shapes with a line in width per kind fitted to whole models (basis
"width", its costs in ``context_costs``; ``profilers.width_model``); older tables plan with the costs
they were fitted with.
Version 7 fits the in-context ratios non-decreasing in the removed share, over width lines that
never cross zero (``profilers.context``); a version-6 table plans with the costs it was fitted with.
Version 6 records what the in-context ratio multiplies (``context_basis``: "standalone", or
"width-line" where the table's shape is memory-bound); version 5 tables multiplied standalone times.
Version 5 adds the cost model (``cost_model``, ``context_knots``, ``context_ratios``) and the
column ``context_ms``; older tables plan through their curve.
Version 4 records the execution mode (``execution``: "eager" or "cuda-graphs"); a version-3 table
was always eager. Version 2 added the phase (``phase``, ``generate_tokens``) and the level grid (``ffn_step``,
``sparsity_levels``) to the metadata; version 3 plans with a p10 estimate (``latency_ms``, with its
interval and the samples left out on a busy machine), records KV groups per level (``groups``) and
how noisy the measurement was (``noisy``, ``noisy_workloads``, ``foreign_load``, ``anchor_ms``) and,
for ONNX Runtime, the fused operators of each workload's graph (``fusions``)."""

COLUMNS: tuple[str, ...] = (
    "unit",
    "kind",
    "level",
    "structure",
    "kept",
    "groups",
    "sparsity",
    "latency_ms",
    "raw_ms",
    "ci_low_ms",
    "ci_high_ms",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
    "noisy_rounds",
    "impl",
    "masked_ms",
    "sparse_ms",
    "signature",
    "context_ms",
)
COST_MODELS = ("curve", "context")
"""How a table predicts a whole model from its units (``TableMetadata.cost_model``)."""
PER_PART = "per part"
"""The ``context_basis`` of a reply's table whose prefill and decode parts used different ones."""
CONTEXT_BASES = (*BASES, PER_PART)
_NUMERIC = (
    "level",
    "kept",
    "groups",
    "sparsity",
    "latency_ms",
    "raw_ms",
    "ci_low_ms",
    "ci_high_ms",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
    "noisy_rounds",
    "masked_ms",
    "sparse_ms",
    "context_ms",
)
_REQUIRED_FINITE = (
    "level",
    "latency_ms",
    "raw_ms",
    "ci_low_ms",
    "ci_high_ms",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
)


@dataclass(frozen=True)
class TableMetadata:
    """Provenance and the fixed part of a latency table (times in ms)."""

    model_name: str
    model_fingerprint: str
    architecture: str
    device: str
    device_name: str
    runtime: str
    runtime_version: str
    torch_version: str
    dtype: str
    batch_size: int
    seq_len: int
    phase: str
    generate_tokens: int
    threads: int
    ffn_step: int | None
    sparsity_levels: int | None
    dense_ms: float
    dense_p10_ms: float
    dense_p90_ms: float
    fixed_ms: float
    calibration_sum_ms: tuple[float, ...]
    calibration_total_ms: tuple[float, ...]
    rounds: int
    warmup: int
    smoothing: str
    created: str
    planner_version: str
    noisy: bool = False
    noisy_workloads: tuple[str, ...] = ()
    foreign_load: float | None = None
    anchor_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    fusions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    execution: str = "eager"
    """How the runtime ran every workload: "eager" or "cuda-graphs" (captured once, replayed)."""
    cost_model: str = "curve"
    """What the planner plans with: "curve" (standalone times through the calibration curve) or
    "context" (``context_ms``, each unit's cost in the whole model; the curve is then fixed_ms + S)."""
    context_knots: tuple[float, ...] = ()
    context_ratios: tuple[float, ...] = ()
    """The fitted in-context / standalone ratio at each removed share (``profilers.context``); empty
    for a curve table and for a reply's table (its parts hold theirs)."""
    context_costs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """A width model's fitted costs ("kind/term" -> ms per unit, kept head / neuron, or key/value group;
    ``profilers.width_model``); empty for other cost models and for a reply's table."""
    context_basis: str = "standalone"
    """How units are priced in context (``profilers.context.BASES``): the ratios over "standalone" times
    or over their least-squares line in width ("width-line", schema-7 memory-bound tables), or a width
    model ("width", memory-bound shapes such as decode at a small batch); a reply's table whose parts
    differ says "per part"."""
    heap: str = AS_FOUND
    """The C heap the samples ran on (``profilers.heap.HEAP_STATES``): "settled" (a long-running
    process's state) or "as found" (not glibc, or a table from before schema 9)."""
    schema_version: int = SCHEMA_VERSION

    def provenance(self) -> dict[str, Any]:
        """The fields a plan records about the table it was made from."""
        keys = (
            "model_name",
            "model_fingerprint",
            "device",
            "device_name",
            "runtime",
            "runtime_version",
            "execution",
            "dtype",
            "batch_size",
            "seq_len",
            "phase",
            "generate_tokens",
            "threads",
            "ffn_step",
            "sparsity_levels",
            "dense_ms",
            "fixed_ms",
            "cost_model",
            "created",
        )
        return {k: getattr(self, k) for k in keys}


def _phase_text(meta: TableMetadata) -> str:
    if meta.phase == "generate":
        return f"a reply of {meta.generate_tokens} tokens (prefill + {meta.generate_tokens} decode steps)"
    return meta.phase


def sidecar_path(csv_path: str | Path) -> Path:
    """The JSON metadata file that belongs to a table CSV."""
    return Path(csv_path).with_suffix(".json")


@dataclass(frozen=True)
class LatencyTable:
    """A frozen latency table. ``frame`` is a private copy; callers get copies too."""

    frame: pd.DataFrame
    meta: TableMetadata

    def __post_init__(self) -> None:
        frame = self.frame if "context_ms" in self.frame.columns else self.frame.assign(context_ms=np.nan)
        _validate_frame(frame, source="table")
        if self.meta.cost_model not in COST_MODELS:
            raise TableFormatError(
                f"cost model {self.meta.cost_model!r} is not one of {', '.join(COST_MODELS)}; re-run `planner profile`."
            )
        if self.meta.context_basis not in CONTEXT_BASES:
            raise TableFormatError(
                f"context basis {self.meta.context_basis!r} is not one of {', '.join(CONTEXT_BASES)}; re-run "
                "`planner profile`."
            )
        if self.meta.cost_model == "context":
            values = frame["context_ms"].to_numpy(dtype=np.float64)
            if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
                raise TableFormatError(
                    "a context table needs a finite, non-negative context_ms on every row; re-run `planner profile`."
                )
        object.__setattr__(self, "frame", frame.loc[:, list(COLUMNS)].copy())

    @property
    def calibration(self) -> CalibrationCurve:
        """g: summed unit ms -> end-to-end ms."""
        return CalibrationCurve(self.meta.calibration_sum_ms, self.meta.calibration_total_ms)

    # ----- queries -------------------------------------------------------------------------
    def units(self) -> list[str]:
        """Unit names in table (model) order."""
        return list(dict.fromkeys(self.frame["unit"]))

    def unit_frame(self, unit: str) -> pd.DataFrame:
        """The rows of one unit, ordered by level."""
        rows = self.frame[self.frame["unit"] == unit]
        if rows.empty:
            raise KeyError(f"unit {unit!r} is not in this table; units: {', '.join(self.units()[:6])}...")
        return rows.sort_values("level").reset_index(drop=True)

    @property
    def planning_column(self) -> str:
        """The column the planner sums: ``context_ms`` for a context table, else ``latency_ms``."""
        return "context_ms" if self.meta.cost_model == "context" else "latency_ms"

    def unit_costs(self, column: str | None = None) -> list[np.ndarray]:
        """Per unit (table order), the latency of each level (ms), shape (n_levels,): what the
        planner sums (``planning_column``) unless ``column`` names another."""
        name = self.planning_column if column is None else column
        return [self.unit_frame(u)[name].to_numpy(dtype=np.float64) for u in self.units()]

    @property
    def searched_dense_ms(self) -> float:
        """Sum of every unit's dense-level latency as planned (ms)."""
        return float(sum(c[0] for c in self.unit_costs()))

    def predict_ms(self, levels: Sequence[int] | Mapping[str, int]) -> float:
        """Predicted end-to-end latency ``g(sum of the chosen levels' latency_ms)`` (ms).

        ``levels`` is one level index per unit in table order, or a mapping unit -> level (units
        not named stay dense).
        """
        costs = self.unit_costs()
        names = self.units()
        if isinstance(levels, Mapping):
            unknown = set(levels) - set(names)
            if unknown:
                raise KeyError(f"units not in this table: {sorted(unknown)}")
            chosen = [int(levels.get(n, 0)) for n in names]
        else:
            chosen = [int(k) for k in levels]
            if len(chosen) != len(names):
                raise ValueError(f"need one level per unit ({len(names)}); got {len(chosen)}")
        total = 0.0
        for name, c, k in zip(names, costs, chosen, strict=True):
            if not 0 <= k < c.size:
                raise ValueError(f"unit {name!r} has levels 0..{c.size - 1}; got {k}")
            total += float(c[k])
        return self.calibration.total(total)

    def budget_ms(self, speedup: float) -> float:
        """Budget for the summed unit latencies that meets ``speedup`` over the dense model (ms).

        ``g^-1(dense_ms / speedup)``; with a linear g this is SPDY's ``dense / X - fixed``. May be
        below the fastest plan's sum, which means the target is not reachable.
        """
        if not speedup > 1.0:
            raise ValueError(f"The 'speedup' parameter must be > 1.0. Got {speedup!r} instead.")
        budget = self.calibration.max_sum(self.meta.dense_ms / speedup)
        # +inf: above the curve's measured range (a target barely over 1x), every plan fits. -inf (a
        # flat lowest segment, e.g. a noisy fastest anchor pooled by the isotonic fit, asked below it)
        # stays: no plan fits.
        if budget == math.inf:
            return sum(float(c.max()) for c in self.unit_costs())
        return budget

    def max_speedup(self) -> float:
        """``dense / g(sum of each unit's fastest level)``."""
        fastest = self.calibration.total(sum(float(c.min()) for c in self.unit_costs()))
        return self.meta.dense_ms / fastest if fastest > 0 else math.inf

    def summary(self) -> str:
        """A few readable lines: fixed part, dense time, reachable speedup, per-kind ranges."""
        m = self.meta
        lines = [
            f"latency table: {m.model_name} on {m.device} ({m.device_name}), {m.runtime} {m.runtime_version} "
            f"({m.execution}), "
            f"{m.dtype}, batch {m.batch_size} x seq {m.seq_len}, {_phase_text(m)}, {m.threads} threads, "
            f"C heap {m.heap}",
            f"  dense end-to-end: {m.dense_ms:.2f} ms (p10 {m.dense_p10_ms:.2f}, p90 {m.dense_p90_ms:.2f})",
            f"  fixed part (not searched): {m.fixed_ms:.2f} ms; "
            f"searched units at dense: {self.searched_dense_ms:.2f} ms ({self._cost_text()})",
            f"  maximum achievable speedup: {self.max_speedup():.2f}x",
        ]
        if m.noisy:
            load = "" if m.foreign_load is None else f"; other processes used {100 * m.foreign_load:.0f}% of the CPU"
            shown = ", ".join(m.noisy_workloads[:3]) + (" ..." if len(m.noisy_workloads) > 3 else "")
            lines.append(
                f"  NOISY: {len(m.noisy_workloads)} measurements did not settle ({shown}){load}; close other work "
                "and profile again (or raise --rounds)"
            )
        for kind, rows in self.frame.groupby("kind", sort=False):
            units = rows["unit"].nunique()
            dense = rows[rows["level"] == 0]["latency_ms"]
            fastest = rows.groupby("unit")["latency_ms"].min()
            lines.append(
                f"  {kind}: {units} units x {len(rows) // units} levels; dense {dense.mean():.2f} ms, "
                f"fastest level {fastest.mean():.2f} ms (mean per unit)"
            )
        return "\n".join(lines)

    def _cost_text(self) -> str:
        m = self.meta
        if m.cost_model != "context":
            return f"standalone; {len(m.calibration_sum_ms)} whole-model calibration points"
        if m.context_costs:
            return "in context: " + WidthModel(m.fixed_ms, m.context_costs).describe()
        if not m.context_ratios:
            return "in context: the parts' costs in their whole models"
        ratios = ", ".join(f"{r:.2f}" for r in m.context_ratios)
        shares = ", ".join(f"{k:g}" for k in m.context_knots)
        basis = "standalone" if m.context_basis == "standalone" else "standalone on their line in width"
        return f"in context: {basis} x ({ratios}) at ({shares}) of a unit's time removed"

    # ----- files ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the CSV and its JSON sidecar atomically; returns the CSV path."""
        csv_path = Path(path)
        meta = dataclasses.asdict(self.meta)
        meta["columns"] = list(COLUMNS)
        meta["rows"] = len(self.frame)
        with atomic_path(csv_path) as tmp:
            self.frame.to_csv(tmp, index=False, float_format="%.6g")
            atomic_write_text(sidecar_path(csv_path), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return csv_path

    @classmethod
    def load(cls, path: str | Path, *, expected_fingerprint: str | None = None, force: bool = False) -> LatencyTable:
        """Read a table written by ``save``; validates everything.

        Args:
            expected_fingerprint: the model's fingerprint; a table for another model is an error
                unless ``force``.
        """
        csv_path = Path(path)
        json_path = sidecar_path(csv_path)
        for p in (csv_path, json_path):
            if not p.is_file():
                raise TableFormatError(
                    f"latency table file {p} does not exist; run `planner profile ... --out {csv_path}` first."
                )
        try:
            raw_meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TableFormatError(f"{json_path} is not valid JSON ({exc}); re-run `planner profile`.") from None
        if not isinstance(raw_meta, dict):
            raise TableFormatError(f"{json_path} must hold a JSON object; re-run `planner profile`.")
        version = raw_meta.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise TableFormatError(
                f"{json_path} has schema version {version!r}; this planner reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Re-run `planner profile` with this version."
            )
        if version == 3:  # before execution modes: every table was timed eagerly
            raw_meta = {**raw_meta, "execution": "eager"}
        if version in (3, 4):  # before cost models: every table planned through its curve
            raw_meta = {**raw_meta, "cost_model": "curve", "context_knots": [], "context_ratios": []}
        if version in (3, 4, 5):  # before bases: the ratios multiplied standalone times
            raw_meta = {**raw_meta, "context_basis": "standalone"}
        if version in (3, 4, 5, 6, 7):  # before width models
            raw_meta = {**raw_meta, "context_costs": {}}
        if version in (3, 4, 5, 6, 7, 8):  # before the heap was settled for timing
            raw_meta = {**raw_meta, "heap": AS_FOUND}
        raw_meta = {**raw_meta, "schema_version": SCHEMA_VERSION}  # older fields filled in above; values kept
        fields = {f.name for f in dataclasses.fields(TableMetadata)}
        missing = sorted(fields - set(raw_meta))
        if missing:
            raise TableFormatError(f"{json_path} lacks metadata fields {missing}; re-run `planner profile`.")
        values = {k: raw_meta[k] for k in fields}
        for key in ("calibration_sum_ms", "calibration_total_ms", "context_knots", "context_ratios"):
            values[key] = tuple(float(v) for v in values[key]) if isinstance(values[key], list) else values[key]
        values["noisy_workloads"] = tuple(values["noisy_workloads"])
        meta = TableMetadata(**values)
        try:
            CalibrationCurve(meta.calibration_sum_ms, meta.calibration_total_ms)
        except (TypeError, ValueError) as exc:
            raise TableFormatError(f"{json_path}: bad calibration anchors ({exc}); re-run `planner profile`.") from None
        if meta.heap not in HEAP_STATES:
            raise TableFormatError(
                f"{json_path}: heap {meta.heap!r} is not one of {', '.join(HEAP_STATES)}; re-run `planner profile`."
            )
        if meta.context_costs:
            try:
                WidthModel(meta.fixed_ms, dict(meta.context_costs))
            except (AttributeError, TypeError, ValueError) as exc:
                raise TableFormatError(f"{json_path}: bad width costs ({exc}); re-run `planner profile`.") from None
        try:
            frame = pd.read_csv(
                csv_path, dtype={"unit": str, "kind": str, "structure": str, "impl": str, "signature": str}
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise TableFormatError(f"{csv_path} is not a readable CSV ({exc}); re-run `planner profile`.") from None
        if version in (3, 4) and "context_ms" not in frame.columns:
            frame["context_ms"] = np.nan
        _validate_frame(frame, source=str(csv_path))
        if int(raw_meta.get("rows", len(frame))) != len(frame):
            raise TableFormatError(
                f"{csv_path} has {len(frame)} rows but its sidecar says {raw_meta['rows']}: the pair is "
                "truncated or mismatched; re-run `planner profile`."
            )
        if expected_fingerprint is not None and meta.model_fingerprint != expected_fingerprint and not force:
            raise TableFormatError(
                f"{csv_path} was profiled for model {meta.model_name!r} (fingerprint {meta.model_fingerprint}), "
                f"not for this model (fingerprint {expected_fingerprint}); profile this model, or pass "
                "--force-table to use it anyway."
            )
        return cls(frame=frame, meta=meta)


def _validate_frame(frame: pd.DataFrame, *, source: str) -> None:
    try:
        _check_frame(frame, source=source)
    except TableFormatError as exc:
        if source == "table":
            raise
        raise TableFormatError(f"{exc} Re-run `planner profile` to measure it again.") from None


def _check_frame(frame: pd.DataFrame, *, source: str) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TableFormatError(f"{source} lacks columns {missing}.")
    if frame.empty:
        raise TableFormatError(f"{source} has no rows.")
    for column in _NUMERIC:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise TableFormatError(f"{source}: column {column!r} must be numeric; the file is corrupt.")
    for column in _REQUIRED_FINITE:
        values = frame[column].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise TableFormatError(f"{source}: column {column!r} has empty or non-finite values; the file is corrupt.")
    if (frame["latency_ms"] < 0).any():
        raise TableFormatError(f"{source}: negative latencies; the file is corrupt.")
    for unit, rows in frame.groupby("unit", sort=False):
        levels = sorted(int(v) for v in rows["level"])
        if levels != list(range(len(levels))):
            raise TableFormatError(
                f"{source}: unit {unit!r} has levels {levels}, expected 0..{len(levels) - 1} without gaps."
            )
