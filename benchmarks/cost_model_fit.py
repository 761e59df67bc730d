"""Which additive cost model predicts whole shrunk models? The table's curve against per-kind linear fits.

One profile of the model (the planner's table), then about 40 shrunk models timed interleaved with
the dense one (``profile_accuracy.py``'s random, extreme and depth families and the table's own
anchors). For each model, features that are sums over units, so a DP could plan with any of them:

- ``Sa`` / ``Sm``: the table's standalone times of its attention / MLP units at their levels (ms);
- ``Sad`` / ``Smd``: the same over units left dense (level 0) only;
- ``na`` / ``nm``: attention / MLP units that keep anything (``n`` both);
- ``W`` / ``Wa`` / ``Wm``: the same sums as ``S`` over each unit's standalone times straightened in
  its width (``profilers.context.width_line``: bytes over bandwidth plus a per-call part), so
  ``c0 + c1 x W + c2 x n`` prices a memory-bound pass by bytes plus a cost per present unit;
- ``Hf0..5``: standalone times weighted by the hat functions of a piecewise-linear ratio over the
  unit's level fraction (0 dense, 1 last level), knots at the anchor fractions: ``sum_u s_u x
  r(fraction_u)``, the unit's cost in context when a thin unit costs relatively more in context than
  a dense one (its weights come from memory, not cache); ``Hr0..5`` the same over the unit's size
  ``1 - s / s_dense`` instead of its level fraction.

Candidate models ``T = c0 + sum(ci x feature_i)`` are fitted by least squares to the measured times
(the dense time of the table times measured / table speedup) and judged leave-one-out, and fitted on
what a profile could time (the anchors and the depth family) and judged on the rest. Errors are
measured vs predicted speedup, in %, per family. The question it answers: does a plan of dense
and removed layers cost what its standalone unit times say, through one curve (the table), or does
it need terms that know a unit is dense or present (SmolLM2 decode, 2026-12-05)?

Run: ``.venv/bin/python benchmarks/cost_model_fit.py [--model smollm2] [--phase decode] [--batch-size 1]
[--seq-len 128] [--rounds 20] [--dump FILE] [--plans SWEEP/pareto.csv] [--families ...]``. ``--plans`` adds the plans a
sweep made (the family "plans": what a search picks is where a cost model's errors matter). Last line:
``max_error_pct_random/extreme/depth/plans: curve=<r/e/d/p> table=<r/e/d/p> best=<features>:<r/e/d/p>``:
the largest error per family of the curve through the anchors, of the table as it plans (its
``cost_model``), and of the candidate with the smallest leave-one-out maximum (nan: no such family).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from profile_accuracy import CONFIGS, depth_levels, extreme_levels, random_levels

from profilers.context import KNOTS as CONTEXT_KNOTS
from profilers.context import hat_weights, width_line
from profilers.heap import settle_heap

FAMILIES = ("anchors", "random", "extreme", "depth", "plans")
CHECKED = ("random", "extreme", "depth", "plans")
"""The families a fit is judged on (the anchors are what a profile fits to)."""
KNOTS = CONTEXT_KNOTS
"""Where the in-context ratio ``r`` of the ``H`` features is free (the table's context model's)."""
HAT_F = tuple(f"Hf{i}" for i in range(len(KNOTS)))
HAT_R = tuple(f"Hr{i}" for i in range(len(KNOTS)))
CANDIDATES = (
    ("S",),
    HAT_F,
    HAT_R,
    ("Sa", "Sm"),
    ("Sa", "Sm", "na", "nm"),
    ("Sa", "Sm", "Sad", "Smd"),
    ("Sa", "Sm", "Sad", "Smd", "na", "nm"),
    ("W",),
    ("W", "n"),
    ("Wa", "Wm", "na", "nm"),
)


def hats(position: float) -> np.ndarray:
    """Weights of the piecewise-linear interpolation at ``position`` over ``KNOTS`` (clamped)."""
    return hat_weights(np.array([position]), KNOTS)[0]


def features(
    levels: list[int], costs: list[np.ndarray], kinds: list[str], kept: list[list[int]], lines: list[np.ndarray]
) -> dict[str, float]:
    """The additive features of one configuration (one level per unit, table order); ``lines``: per unit,
    its standalone times on their line in width (``width_lines``)."""
    out = dict.fromkeys(("S", "Sa", "Sm", "Sad", "Smd", "n", "na", "nm", "W", "Wa", "Wm", *HAT_F, *HAT_R), 0.0)
    for unit, level in enumerate(levels):
        cost, kind = float(costs[unit][level]), "a" if kinds[unit] == "attention" else "m"
        out["S"] += cost
        out[f"S{kind}"] += cost
        out["W"] += float(lines[unit][level])
        out[f"W{kind}"] += float(lines[unit][level])
        fraction = level / max(1, costs[unit].size - 1)
        size = 1.0 - cost / float(costs[unit][0]) if costs[unit][0] > 0 else 0.0
        for names, position in ((HAT_F, fraction), (HAT_R, size)):
            for name, weight in zip(names, hats(position), strict=True):
                out[name] += cost * weight
        if level == 0:
            out[f"S{kind}d"] += cost
        if kept[unit][level] > 0:
            out[f"n{kind}"] += 1
            out["n"] += 1
    return out


def width_lines(costs: list[np.ndarray], kept: list[list[int]]) -> list[np.ndarray]:
    """Per unit, its standalone times (n_levels,) straightened in its width, as a decode table's basis."""
    widths = [np.array([np.nan if k is None else k for k in unit], dtype=np.float64) for unit in kept]
    return [width_line(c, w) for c, w in zip(costs, widths, strict=True)]


def sweep_levels(units: list[Any], csv: Path) -> dict[str, dict[str, int]]:
    """``plans/<row>:<method>@<planned for>`` -> unit levels of each row of a sweep's pareto.csv (read as
    ``compensation_bench.row_levels`` reads a row)."""
    import pandas as pd
    from compensation_bench import row_levels

    if not csv.is_file():
        raise SystemExit(f"--plans {csv}: no such file; pass the pareto.csv a `planner sweep --out DIR` wrote.")
    out = {}
    for index, row in pd.read_csv(csv).iterrows():
        method = str(row["method"]).split(" ")[0]
        levels = {unit.name: level.index for unit, level in row_levels(units, row, str(csv))}
        out[f"plans/{index}:{method}@{float(row['planned_for']):.2f}"] = levels
    return out


def fit_predict(x: np.ndarray, t: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Least-squares fit on the rows ``train``; predictions for every row."""
    coef, *_ = np.linalg.lstsq(x[train], t[train], rcond=None)
    return x @ coef


def errors_by_family(
    predicted_ms: np.ndarray, measured_ms: np.ndarray, family: list[str]
) -> dict[str, tuple[float, float]]:
    """Per family, (median, max) of |measured vs predicted speedup| in %."""
    err = np.abs(100.0 * (predicted_ms / measured_ms - 1.0))
    out = {}
    for name in FAMILIES:
        rows = [i for i, f in enumerate(family) if f == name]
        if rows:
            out[name] = (float(np.median(err[rows])), float(np.max(err[rows])))
    return out


def show(label: str, by_family: dict[str, tuple[float, float]]) -> None:
    cells = " | ".join(f"{name} {med:4.1f} / {worst:4.1f}" for name, (med, worst) in by_family.items())
    print(f"{label:<40} {cells}", flush=True)


def main() -> None:
    settle_heap()  # as the planner command does, before any model is built
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--phase", default="decode")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20, help="paired rounds of the check")
    parser.add_argument("--dump", type=Path, help="write the measurements here (JSON) to fit other models offline")
    parser.add_argument(
        "--plans", type=Path, help="a sweep's pareto.csv: its plans (heads / neurons per layer) as the family 'plans'"
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=("random", "extreme", "depth"),
        default=["random", "extreme", "depth"],
        help="which families to time besides the anchors (each shrunk model is held in memory: about 0.5 GB for "
        "SmolLM2, so all three and ten plans do not fit in 24 GB)",
    )
    args = parser.parse_args()

    from planner.config import Measurement
    from planner.models import load_model
    from planner.stages.profile.measure import DENSE_KEY, calibration_anchors, profile_model
    from planner.stages.verify import verify_models
    from profilers.calibration import CalibrationCurve

    measurement = Measurement("torch", "cpu", "float32", args.batch_size, args.seq_len, 2, 10, 0, args.phase, 0, 0)
    loaded = load_model(args.model, batch_size=args.batch_size, seq_len=args.seq_len)
    adapter = loaded.adapter
    units = adapter.units()
    with tempfile.TemporaryDirectory() as tmp:
        table = profile_model(loaded, measurement, out=Path(tmp) / "table.csv", progress=False)
    configs: dict[str, dict[str, int]] = {}
    rng = np.random.default_rng(0)
    if "random" in args.families:
        for i, fraction in enumerate(np.linspace(0.0, 0.95, CONFIGS)):
            configs[f"random/{i}"] = random_levels(units, rng, float(fraction))
    if "extreme" in args.families:
        configs.update(extreme_levels(units))
    if "depth" in args.families:
        configs.update({f"depth/{k}": v for k, v in depth_levels(adapter).items()})
    configs.update(
        {
            f"anchors/{k.strip('_')}": v
            for k, v in calibration_anchors(units, by_kind=table.meta.context_basis == "width").items()
            if k != DENSE_KEY
        }
    )
    if args.plans:
        configs.update(sweep_levels(units, args.plans))
    models: dict[str, Any] = {"dense": adapter.model}
    models.update({name: adapter.shrink_to_levels(levels) for name, levels in configs.items()})
    check = verify_models(adapter, models, dataclasses.replace(measurement, rounds=args.rounds, max_rounds=None))

    names = list(table.units())
    by_name = {u.name: u for u in units}
    costs = table.unit_costs("latency_ms")  # standalone, whatever the table plans with
    kinds = [by_name[n].kind for n in names]
    kept = [[level.kept for level in by_name[n].levels] for n in names]
    family = [name.split("/")[0] if name.split("/")[0] in FAMILIES else "extreme" for name in configs]
    measured = np.array([table.meta.dense_ms / check.speedup(name).value for name in configs])
    lines = width_lines(costs, kept)
    feats = [features([int(lv.get(n, 0)) for n in names], costs, kinds, kept, lines) for lv in configs.values()]
    # The dense model is an anchor too (speedup 1 by definition), and a fit on anchors alone needs it.
    family.append("anchors")
    measured = np.append(measured, table.meta.dense_ms)
    feats.append(features([0] * len(names), costs, kinds, kept, lines))
    all_levels = [*configs.values(), {}]
    print(
        f"{adapter.name} {args.phase} b{args.batch_size} s{args.seq_len}: {len(configs)} models, table dense "
        f"{table.meta.dense_ms:.2f} ms; errors in % as median / max per family"
    )
    table_predicted = np.array([table.predict_ms(lv) for lv in all_levels])
    table_errors = errors_by_family(table_predicted, measured, family)
    if args.dump:
        record = {
            "units": names,
            "kinds": kinds,
            "kept": kept,
            "costs_ms": [c.tolist() for c in costs],
            "dense_ms": table.meta.dense_ms,
            "configs": {name: [int(lv.get(n, 0)) for n in names] for name, lv in configs.items()},
            "measured_ms": measured[:-1].tolist(),
            "table_anchor_ms": table.meta.anchor_ms,
            "table_context": [table.meta.fixed_ms, list(table.meta.context_ratios)],
            "table_predicted_ms": table_predicted[:-1].tolist(),
            "check_dense_ms": check["dense"].p10_ms,
        }
        args.dump.write_text(json.dumps(record))
    for i, name in enumerate(configs):
        if family[i] == "plans":
            print(
                f"  {name}: table {table.meta.dense_ms / table_predicted[i]:.2f}x, "
                f"measured {table.meta.dense_ms / measured[i]:.2f}x"
            )
    show(f"the table as it plans ({table.meta.cost_model})", table_errors)
    anchor_keys = calibration_anchors(units, by_kind=table.meta.context_basis == "width")
    curve = CalibrationCurve.fit(
        [sum(float(costs[i][levels[n]]) for i, n in enumerate(names)) for levels in anchor_keys.values()],
        [table.meta.anchor_ms[key] for key in anchor_keys],
    )
    standalone_sums = [sum(float(costs[i][int(lv.get(n, 0))]) for i, n in enumerate(names)) for lv in all_levels]
    curve_errors = errors_by_family(np.array([curve.total(x) for x in standalone_sums]), measured, family)
    show("the curve (g of summed standalone times)", curve_errors)
    profiled = np.array([f in ("anchors", "depth") for f in family])
    anchored = np.array([f == "anchors" for f in family])
    best: tuple[float, str, dict[str, tuple[float, float]]] | None = None
    for columns in CANDIDATES:
        x = np.array([[1.0] + [f[c] for c in columns] for f in feats])
        loo = np.array([fit_predict(x, measured, np.arange(len(x)) != i)[i] for i in range(len(x))])
        loo_errors = errors_by_family(loo, measured, family)
        show(f"leave-one-out {'+'.join(columns)}", loo_errors)
        show(
            f"  fitted on anchors+depth {'+'.join(columns)}",
            errors_by_family(fit_predict(x, measured, profiled), measured, family),
        )
        show(
            f"  fitted on anchors {'+'.join(columns)}",
            errors_by_family(fit_predict(x, measured, anchored), measured, family),
        )
        worst = max(loo_errors[f][1] for f in CHECKED if f in loo_errors)
        if best is None or worst < best[0]:
            best = (worst, "+".join(columns), loo_errors)
    assert best is not None
    _, label, chosen = best
    worst = {
        name: "/".join(f"{errors.get(f, (0.0, math.nan))[1]:.1f}" for f in CHECKED)
        for name, errors in (("curve", curve_errors), ("table", table_errors), ("best", chosen))
    }
    print(
        f"max_error_pct_{'/'.join(CHECKED)}: curve={worst['curve']} table={worst['table']} best={label}:{worst['best']}"
    )


if __name__ == "__main__":
    main()
