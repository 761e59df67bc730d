"""``profile_model``: the model's units x levels -> a measured ``LatencyTable`` on this device.

Workloads: every distinct (shape signature, level, implementation) of the units, timed standalone
with the inputs the unit receives in a real forward pass, plus the whole dense model. All of them
are interleaved round by round. Units with one signature share measurements (MiniLM's 6 layers
are one attention shape and one FFN shape).

For weight-sparsity levels both the dense kernel on masked weights and the sparse kernel (where
one exists) are timed; the table keeps both and plans with the faster (``impl``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from planner.config import SMOOTHING, Measurement
from planner.errors import PlannerError
from planner.models import LoadedModel, Unit
from planner.models.base import level_grid
from planner.models.phases import shape_of
from planner.version import __version__
from profilers import LatencyTable, Measured, Profiler, ProfilerSettings, TableFormatError, TableMetadata, Workload
from profilers.calibration import CalibrationCurve
from profilers.context import ContextModel, context_basis
from profilers.heap import AS_FOUND
from profilers.runtimes import DTYPES, device_name
from profilers.smoothing import non_increasing_fit
from profilers.table import PER_PART
from profilers.timing import TimingStats
from profilers.width_model import UnitWidths, WidthModel

DENSE_KEY = "__dense_model__"
ANCHOR_FRACTIONS = (0.25, 0.5, 0.75, 0.85, 0.95, 1.0)
"""Whole models timed for the calibration curve: every unit at this fraction of its levels."""
MIXED_ANCHORS = {"alternating": (0.8, 0.2), "jitter-0.3": (0.3, 0.3), "jitter-0.6": (0.6, 0.3)}
"""Whole models with mixed unit sizes, timed for the calibration curve too: "alternating" puts even
layers at 0.8 and odd ones at 0.2 of their range; "jitter-f" puts every unit at f +- 0.3 (seeded).
Plans are rarely uniform, and on BERT-base (2 CPU cores) models with mixed layer sizes ran 3-11%
slower than uniform ones with the same summed unit times (benchmarks/RESULTS.md); a curve through
uniform anchors alone over-promised for them."""


def profile_model(
    loaded: LoadedModel,
    measurement: Measurement,
    *,
    smoothing: str = "none",
    out: str | Path | None = None,
    progress: bool = True,
    reuse: bool = True,
) -> LatencyTable:
    """Measure a latency table for ``loaded`` and save it to ``out`` (if given).

    Args:
        loaded: the model, loaded with the level grid to measure (``load_model(..., ffn_step=...)``).
        measurement: runtime, device, dtype, shape, phase, threads, rounds.
        smoothing: "none" or "monotone" (fit non-increasing curves to head/neuron latencies).
        out: CSV path; its JSON sidecar is written beside it. While profiling, samples are
            checkpointed to ``<out>.partial.json`` so an interrupted run resumes.
        reuse: if ``out`` already holds a table for the same model and settings, return it.
    """
    if smoothing not in SMOOTHING:
        raise PlannerError(
            f"The 'smoothing' parameter must be one of {', '.join(SMOOTHING)}. Got {smoothing!r} instead."
        )
    settings = measurement.profiler_settings()
    profiler = Profiler(settings)  # checks device, runtime, providers
    out_path = Path(out) if out is not None else None
    if out_path is not None and reuse and out_path.exists():
        cached = _matching_table(out_path, loaded, measurement, settings, smoothing)
        if cached is not None:
            return cached
    if measurement.phase == "generate":
        table = _profile_reply(loaded, measurement, smoothing=smoothing, out=out_path, progress=progress, reuse=reuse)
        if out_path is not None:
            table.save(out_path)
        return table

    adapter = loaded.adapter
    units = adapter.units()
    shape = shape_of(measurement)
    unit_work = adapter.workloads(
        units, shape, runtime=measurement.runtime, device=measurement.device, dtype=DTYPES[measurement.dtype]
    )
    workloads = [Workload(w.key, w.module, w.inputs) for w in unit_work]
    dense_module, dense_inputs = adapter.timed(adapter.model, shape)
    workloads.append(Workload(DENSE_KEY, dense_module, dense_inputs, steady=True))
    basis = context_basis(measurement.phase, measurement.batch_size, measurement.seq_len)
    if adapter.supports_shrinking:
        anchors = calibration_anchors(units, by_kind=basis == "width")
    else:
        anchors = {DENSE_KEY: {u.name: 0 for u in units}}
    for key, levels in anchors.items():
        if key != DENSE_KEY:
            module, inputs = adapter.timed(adapter.shrink_to_levels(levels), shape)
            workloads.append(Workload(key, module, inputs, steady=True))
    checkpoint = None if out_path is None else out_path.with_name(out_path.name + ".partial.json")
    stats = profiler.measure(
        workloads,
        checkpoint=checkpoint,
        checkpoint_key=_checkpoint_key(loaded, measurement, smoothing),
        progress=progress,
        description=f"profiling {loaded.adapter.name} ({measurement.runtime}, {measurement.device})",
    )
    frame = _table_rows(units, stats, smoothing=smoothing)
    dense = stats[DENSE_KEY]
    context = _context_model(frame, anchors, stats, basis)
    if context is None:
        curve = _calibration(frame, anchors, stats)
    else:
        frame = _with_context_costs(frame, context)
        curve = CalibrationCurve((0.0,), (context.fixed_ms,))
    noisy = _signatures_of(material_noise(stats, unit_work, units, dense_key=DENSE_KEY), unit_work)
    grid = level_grid(adapter)
    meta = TableMetadata(
        model_name=adapter.name,
        model_fingerprint=loaded.fingerprint,
        architecture=adapter.architecture,
        device=measurement.device,
        device_name=device_name(measurement.device),
        runtime=measurement.runtime,
        runtime_version=profiler.runtime.version(),
        execution=measurement.execution,
        torch_version=str(torch.__version__),
        dtype=measurement.dtype,
        batch_size=int(dense_inputs[0].shape[0]) if adapter.architecture == "generic" else measurement.batch_size,
        seq_len=measurement.seq_len,
        phase=measurement.phase,
        generate_tokens=measurement.generate_tokens,
        threads=settings.threads,
        ffn_step=grid.ffn_step,
        sparsity_levels=grid.sparsity_levels,
        dense_ms=dense.estimate_ms,
        dense_p10_ms=dense.p10_ms,
        dense_p90_ms=dense.p90_ms,
        fixed_ms=curve.fixed_ms,
        calibration_sum_ms=curve.sum_ms,
        calibration_total_ms=curve.total_ms,
        rounds=settings.rounds,
        warmup=settings.warmup,
        smoothing=smoothing,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        planner_version=__version__,
        noisy=bool(noisy),
        noisy_workloads=noisy,
        foreign_load=stats.foreign_load,
        anchor_ms={key: stats[key].estimate_ms for key in anchors},
        fusions=fused_operators(stats, unit_work),
        cost_model="curve" if context is None else "context",
        context_knots=context.knots if isinstance(context, ContextModel) else (),
        context_ratios=context.ratios if isinstance(context, ContextModel) else (),
        context_costs=dict(context.costs) if isinstance(context, WidthModel) else {},
        context_basis="standalone" if context is None else basis,
        heap=stats.heap,
    )
    table = LatencyTable(frame=frame, meta=meta)
    if out_path is not None:
        table.save(out_path)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()
    return table


def _profile_reply(
    loaded: LoadedModel,
    measurement: Measurement,
    *,
    smoothing: str,
    out: Path | None,
    progress: bool,
    reuse: bool,
) -> LatencyTable:
    """A reply of N tokens: the prefill and the decode tables, each measured (and saved beside ``out``),
    combined per level as prefill + N x decode."""
    parts = {}
    for phase in ("prefill", "decode"):
        part = dataclasses.replace(measurement, phase=phase, generate_tokens=0)
        path = None if out is None else out.with_name(f"{out.stem}-{phase}{out.suffix}")
        parts[phase] = profile_model(loaded, part, smoothing=smoothing, out=path, progress=progress, reuse=reuse)
    return combine_phases(
        parts["prefill"], parts["decode"], tokens=measurement.generate_tokens, units=loaded.adapter.units()
    )


def combine_phases(prefill: LatencyTable, decode: LatencyTable, *, tokens: int, units: Sequence[Unit]) -> LatencyTable:
    """The table of a reply of ``tokens`` tokens: per unit and level prefill + tokens x decode (ms).

    Where both parts plan in context, so does the reply: ``context_ms`` and the fixed part add up the
    same way. Otherwise a calibration curve goes through the same whole-model anchors as the parts':
    for each anchor (every unit at a fraction of its range) the combined sum of standalone unit times
    maps to the two parts' predictions, ``prefill + tokens x decode``.
    """
    if prefill.units() != decode.units() or len(prefill.frame) != len(decode.frame):
        raise PlannerError("the prefill and decode tables list different units; profile both with the same model.")
    frame = prefill.frame.copy()
    other = decode.frame
    for column in ("latency_ms", "raw_ms", "ci_low_ms", "ci_high_ms", "median_ms", "p10_ms", "p90_ms"):
        frame[column] = prefill.frame[column].to_numpy() + tokens * other[column].to_numpy()
    frame["repeats"] = np.minimum(prefill.frame["repeats"].to_numpy(), other["repeats"].to_numpy())
    frame["noisy_rounds"] = np.maximum(prefill.frame["noisy_rounds"].to_numpy(), other["noisy_rounds"].to_numpy())
    for column in ("masked_ms", "sparse_ms"):
        frame[column] = prefill.frame[column].to_numpy() + tokens * other[column].to_numpy()
    p, d = prefill.meta, decode.meta
    in_context = p.cost_model == d.cost_model == "context"
    if in_context:
        frame["context_ms"] = prefill.frame["context_ms"].to_numpy() + tokens * other["context_ms"].to_numpy()
        curve = CalibrationCurve((0.0,), (p.fixed_ms + tokens * d.fixed_ms,))
    else:
        frame["context_ms"] = np.nan
        sums, totals = [], []
        standalone = [prefill.unit_costs("latency_ms"), decode.unit_costs("latency_ms")]
        for anchor in calibration_anchors(units).values():
            chosen = [anchor[u.name] for u in units]
            part_sums = [float(sum(c[k] for c, k in zip(costs, chosen, strict=True))) for costs in standalone]
            sums.append(part_sums[0] + tokens * part_sums[1])
            totals.append(prefill.predict_ms(chosen) + tokens * decode.predict_ms(chosen))
        curve = CalibrationCurve.fit(sums, totals)
    meta = dataclasses.replace(
        p,
        phase="generate",
        generate_tokens=tokens,
        dense_ms=p.dense_ms + tokens * d.dense_ms,
        dense_p10_ms=p.dense_p10_ms + tokens * d.dense_p10_ms,
        dense_p90_ms=p.dense_p90_ms + tokens * d.dense_p90_ms,
        fixed_ms=curve.fixed_ms,
        calibration_sum_ms=curve.sum_ms,
        calibration_total_ms=curve.total_ms,
        cost_model="context" if in_context else "curve",
        context_knots=(),
        context_ratios=(),
        context_costs={},
        context_basis=p.context_basis if p.context_basis == d.context_basis else PER_PART,
        heap=p.heap if p.heap == d.heap else AS_FOUND,
        noisy=p.noisy or d.noisy,
        noisy_workloads=tuple(f"prefill: {w}" for w in p.noisy_workloads)
        + tuple(f"decode: {w}" for w in d.noisy_workloads),
        foreign_load=max((x for x in (p.foreign_load, d.foreign_load) if x is not None), default=None),
        anchor_ms={k: v + tokens * d.anchor_ms.get(k, 0.0) for k, v in p.anchor_ms.items()},
        fusions={
            **{f"prefill: {k}": v for k, v in p.fusions.items()},
            **{f"decode: {k}": v for k, v in d.fusions.items()},
        },
    )
    return LatencyTable(frame=frame, meta=meta)


UNIT_NOISE_SHARE = 0.03
"""A unit's estimate is too uncertain when its interval's half-width, times the units sharing it,
exceeds this share of the dense model's latency (it could move a prediction by that much)."""
MODEL_NOISE = 0.10
"""A whole model's estimate (dense, anchors) is too uncertain above this relative interval width."""


def material_noise(stats: Measured, unit_work: Sequence[Any], units: Sequence[Unit], *, dense_key: str) -> list[str]:
    """The measurements that make a table noisy: those with samples from a busy machine, whole models
    whose estimate did not settle, and units whose uncertainty could move a prediction materially.
    (Small workloads whose interval stays wide in relative terms on a quiet machine do not count.)"""
    dense = stats[dense_key].estimate_ms
    shared: dict[str, int] = {}
    for unit in units:
        shared[unit.signature] = shared.get(unit.signature, 0) + 1
    signature_of = {w.key: w.signature for w in unit_work}
    noisy = list(stats.busy)
    for key, st in stats.items():
        if key in stats.busy:
            continue
        if key not in signature_of:
            if st.uncertainty > MODEL_NOISE:
                noisy.append(key)
        elif (st.ci_high_ms - st.ci_low_ms) / 2 * shared.get(signature_of[key], 1) > UNIT_NOISE_SHARE * dense:
            noisy.append(key)
    return noisy


def fused_operators(stats: Measured, unit_work: Sequence[Any]) -> dict[str, str]:
    """Readable workload -> its fused operators ("Attention x1, SkipLayerNormalization x1"; "none")."""
    out = {}
    for key, fused in stats.fusions.items():
        (name,) = _signatures_of([key], unit_work)
        out[name] = ", ".join(f"{op} x{n}" for op, n in sorted(fused.items())) or "none"
    return out


def _signatures_of(keys: Sequence[str], unit_work: Sequence[Any]) -> tuple[str, ...]:
    """Readable names of noisy workloads: "<unit shape> level <i> (<impl>)" or the whole model."""
    names = {w.key: f"{w.signature.split(':')[0]} level {w.level} ({w.impl})" for w in unit_work}
    readable = {DENSE_KEY: "the dense model"}
    return tuple(names.get(k, readable.get(k, k.strip("_").replace("_", " "))) for k in keys)


def calibration_anchors(units: Sequence[Unit], *, by_kind: bool = False) -> dict[str, dict[str, int]]:
    """Every whole model the calibration curve goes through: key -> unit levels (dense first).

    ``by_kind`` adds the models a memory-bound table's width model needs (``profilers.width_model``):
    per kind, that kind emptied in even layers and the rest dense ("__emptied_<kind>__"), and every unit
    of the odd layers emptied with the rest at half range ("__emptied_layers__"), so what a present
    unit costs is told apart per kind and from the fixed part.
    """
    anchors = {DENSE_KEY: {u.name: 0 for u in units}}
    for fraction in ANCHOR_FRACTIONS:
        anchors[f"__anchor_{fraction:g}__"] = anchor_levels(units, fraction)
    rng = np.random.default_rng(12345)
    jitter = {u.name: float(rng.uniform(-1.0, 1.0)) for u in units}
    for name, (center, spread) in MIXED_ANCHORS.items():
        levels = {}
        for unit in units:
            top = len(unit.levels) - 1
            if name == "alternating":
                fraction = center if int(unit.layer or 0) % 2 == 0 else spread
            else:
                fraction = center + spread * jitter[unit.name]
            levels[unit.name] = int(np.clip(round(fraction * top), 0, top))
        anchors[f"__mixed_{name}__"] = levels
    if by_kind:
        anchors.update(emptied_anchors(units))
    return anchors


def emptied_anchors(units: Sequence[Unit]) -> dict[str, dict[str, int]]:
    """Whole models with units emptied: per kind, its units in even layers (even positions for units
    outside layers) at their empty level and the rest dense; and every unit of the odd layers emptied,
    the rest at half range. Units without an empty level stay as the rest."""
    position = {u.name: int(u.layer) if u.layer is not None else i for i, u in enumerate(units)}
    empty: dict[str, int | None] = {u.name: next((lv.index for lv in u.levels if lv.kept == 0), None) for u in units}

    def emptied(chosen: set[str], rest: float) -> dict[str, int]:
        levels = anchor_levels(units, rest)
        for name in chosen:
            level = empty[name]
            if level is not None:
                levels[name] = level
        return levels

    anchors = {}
    for kind in dict.fromkeys(u.kind for u in units):
        chosen = {u.name for u in units if u.kind == kind and position[u.name] % 2 == 0}
        anchors[f"__emptied_{kind}__"] = emptied(chosen, 0.0)
    anchors["__emptied_layers__"] = emptied({u.name for u in units if position[u.name] % 2 == 1}, 0.5)
    return anchors


def _unit_widths(rows: pd.DataFrame) -> UnitWidths:
    """One unit's rows (sorted by level) as the width model reads them."""
    kept = pd.to_numeric(rows["kept"], errors="coerce").to_numpy(float)
    groups = pd.to_numeric(rows["groups"], errors="coerce").to_numpy(float)
    return UnitWidths(str(rows["kind"].iloc[0]), kept, groups, rows["latency_ms"].to_numpy(float))


def _context_model(
    frame: pd.DataFrame, anchors: dict[str, dict[str, int]], stats: Mapping[str, TimingStats], basis: str
) -> ContextModel | WidthModel | None:
    """Each unit's cost in the whole model, fitted to the anchors; None where they are too few. A
    memory-bound shape (basis "width") gets a width model, others a ratio over standalone times."""
    names = list(dict.fromkeys(frame["unit"]))
    ordered = {name: rows.sort_values("level") for name, rows in frame.groupby("unit")}
    timed = [([levels[name] for name in names], stats[key].estimate_ms) for key, levels in anchors.items()]
    if basis == "width":
        return WidthModel.fit([_unit_widths(ordered[name]) for name in names], timed)
    return ContextModel.fit([ordered[name]["latency_ms"].to_numpy(float) for name in names], timed)


def _with_context_costs(frame: pd.DataFrame, context: ContextModel | WidthModel) -> pd.DataFrame:
    """``frame`` with ``context_ms`` filled in from ``context`` (rows in any order)."""
    out = frame.copy()
    out["context_ms"] = np.nan
    for _, rows in out.groupby("unit", sort=False):
        ordered = rows.sort_values("level")
        if isinstance(context, WidthModel):
            (costs,) = context.unit_costs([_unit_widths(ordered)])
        else:
            (costs,) = context.unit_costs([ordered["latency_ms"].to_numpy(float)])
        out.loc[ordered.index, "context_ms"] = costs
    return out


def anchor_levels(units: Sequence[Unit], fraction: float) -> dict[str, int]:
    """Every unit at the level nearest ``fraction`` of its range (0 = dense, 1 = last level)."""
    return {u.name: round(fraction * (len(u.levels) - 1)) for u in units}


def _calibration(
    frame: pd.DataFrame,
    anchors: dict[str, dict[str, int]],
    stats: Mapping[str, TimingStats],
) -> CalibrationCurve:
    """Fit g through the anchors: (sum of the table's unit times at the anchor's levels, measured)."""
    by_unit = {name: rows.set_index("level")["latency_ms"] for name, rows in frame.groupby("unit", sort=False)}
    sums, totals = [], []
    for key, levels in anchors.items():
        sums.append(float(sum(by_unit[name].loc[level] for name, level in levels.items())))
        totals.append(stats[key].estimate_ms)
    if len(sums) == 1:
        return CalibrationCurve((sums[0],), (totals[0],))
    return CalibrationCurve.fit(sums, totals)


def _checkpoint_key(loaded: LoadedModel, measurement: Measurement, smoothing: str) -> str:
    payload = json.dumps(
        {
            "fingerprint": loaded.fingerprint,
            "measurement": dataclasses.asdict(measurement),
            "grid": dataclasses.asdict(level_grid(loaded.adapter)),
            "smoothing": smoothing,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _matching_table(
    path: Path, loaded: LoadedModel, config: Measurement, settings: ProfilerSettings, smoothing: str
) -> LatencyTable | None:
    """The table at ``path`` if it was measured for this model and these settings, else an error."""
    try:
        table = LatencyTable.load(path, expected_fingerprint=loaded.fingerprint)
    except TableFormatError as exc:
        raise PlannerError(f"{path} exists but cannot be reused: {exc} Pass --force to re-profile into it.") from None
    m = table.meta
    same = (
        m.runtime == config.runtime
        and m.device == config.device
        and m.dtype == config.dtype
        and m.batch_size == config.batch_size
        and m.seq_len == config.seq_len
        and m.phase == config.phase
        and m.generate_tokens == config.generate_tokens
        and m.threads == settings.threads
        and m.smoothing == smoothing
        and len(table.frame) == sum(len(u.levels) for u in loaded.adapter.units())
    )
    if not same:
        raise PlannerError(
            f"{path} holds a table measured with other settings ({m.runtime}, {m.device}, {m.dtype}, batch "
            f"{m.batch_size}, seq {m.seq_len}, {m.threads} threads); pass --force to overwrite it or choose "
            "another --out."
        )
    return table


def _table_rows(units: Sequence[Unit], stats: Mapping[str, TimingStats], *, smoothing: str) -> pd.DataFrame:
    rows = []
    for unit in units:
        unit_rows: list[dict[str, Any]] = []
        for level in unit.levels:
            prefix = f"{unit.signature}|{level.index}|"
            impls = {k[len(prefix) :]: s for k, s in stats.items() if k.startswith(prefix)}
            best_impl = min(impls, key=lambda name: impls[name].estimate_ms)
            best = impls[best_impl]
            masked = impls.get("masked")
            sparse = impls.get("csr") or impls.get("semi_structured")
            unit_rows.append(
                {
                    "unit": unit.name,
                    "kind": unit.kind,
                    "level": level.index,
                    "structure": level.structure,
                    "kept": np.nan if level.kept is None else level.kept,
                    "groups": np.nan if level.groups is None else level.groups,
                    "sparsity": np.nan if level.sparsity is None else level.sparsity,
                    "latency_ms": best.estimate_ms,
                    "raw_ms": best.estimate_ms,
                    "ci_low_ms": best.ci_low_ms,
                    "ci_high_ms": best.ci_high_ms,
                    "median_ms": best.median_ms,
                    "p10_ms": best.p10_ms,
                    "p90_ms": best.p90_ms,
                    "repeats": best.repeats,
                    "noisy_rounds": best.noisy_rounds,
                    "impl": best_impl,
                    "masked_ms": np.nan if masked is None else masked.estimate_ms,
                    "sparse_ms": np.nan if sparse is None else sparse.estimate_ms,
                    "signature": unit.signature,
                }
            )
        dense_ms = unit_rows[0]["latency_ms"] if unit_rows else math.nan
        for row in unit_rows[1:]:
            if not pd.isna(row["sparsity"]) and row["latency_ms"] < dense_ms and row["impl"] == "masked":
                # Weight sparsity run as a dense kernel on masked weights is never really faster than
                # dense: a sample below it is noise, and it must not buy a zeroed layer. A sparse kernel
                # (CSR, 2:4 semi-structured) counts only where it measured faster than dense.
                row["latency_ms"] = dense_ms
        if smoothing == "monotone" and unit.kind in ("attention", "ffn"):
            fitted = non_increasing_fit([r["raw_ms"] for r in unit_rows])
            for row, value in zip(unit_rows, fitted, strict=True):
                row["latency_ms"] = float(value)
        rows.extend(unit_rows)
    return pd.DataFrame(rows)
