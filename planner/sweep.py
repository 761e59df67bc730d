"""``planner sweep``: the metric/speedup trade-off of several methods at several targets.

For each target: the planner (Fisher, DP + search), the uniform allocation (same backend and table)
and the planner with magnitude scores; each applied; all timed interleaved with the dense model in
one run (paired speedups) and evaluated on the held-out test set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from planner.backends import get_backend
from planner.cache import cached_scores
from planner.config import RunConfig
from planner.errors import PlannerError
from planner.pipeline import StageClock, check_reachable, make_plan, prepare
from planner.search import search_levels
from planner.verify import verify_models
from profilers.atomic import atomic_dir

SWEEP_SEARCH_SECONDS = 30.0
"""Search time per plan when ``planner sweep`` is not given ``--search-seconds`` (it plans many)."""

SWEEP_METHODS = (
    ("planner (fisher)", "fisher", "dp", True),
    ("uniform (fisher)", "fisher", "uniform", False),
    ("planner (magnitude)", "magnitude", "dp", True),
)
"""(label, backend, solver, searched) of the plans compared at every target of a sweep."""


def run_sweep(
    config: RunConfig,
    speedups: list[float],
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> pd.DataFrame:
    """Plan, apply, measure and evaluate every method at every target; writes ``out/pareto.csv`` and
    ``out/pareto.png`` (+ .svg) and returns the pareto frame."""
    from planner.report import plots

    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    if not speedups or any(not s > 1.0 for s in speedups):
        raise PlannerError(f"The 'speedups' parameter must list targets > 1.0. Got {speedups!r} instead.")
    clock = StageClock()
    prepared = prepare(config, clock, progress=progress)
    check_reachable(prepared.table, speedups)
    models: dict[str, nn.Module] = {}
    rows: list[dict[str, Any]] = []
    for speedup in speedups:
        for label, backend_name, solver, searched in SWEEP_METHODS:
            log(f"{speedup:g}x: {label}")
            backend = get_backend(backend_name)
            scores = cached_scores(backend, prepared.loaded, prepared.task, cache_dir=config.cache_dir)
            task = prepared.task
            settings = config.replace(solver=solver).search_settings(
                calibration=len(task.calibration), default_examples=task.search_examples
            )
            search = None
            if searched and settings.method != "none":
                search = search_levels(
                    adapter=prepared.loaded.adapter,
                    task=prepared.task,
                    table=prepared.table,
                    scores=scores,
                    backend=backend,
                    budget_ms=prepared.table.budget_ms(speedup),
                    settings=settings,
                )
            plan = make_plan(
                prepared,
                backend=backend,
                scores=scores,
                speedup=speedup,
                solver=solver,
                seed=config.seed,
                search=search,
            )
            key = f"{label}@{speedup:g}"
            models[key] = backend.apply(prepared.loaded.adapter, plan, prepared.task)
            rows.append(
                {
                    "method": label,
                    "target_speedup": speedup,
                    "predicted_speedup": plan.predicted_speedup,
                    "solver": plan.solver,
                    "key": key,
                    "heads_kept": [c.kept for c in plan.units if c.kind == "attention"],
                    "neurons_kept": [c.kept for c in plan.units if c.kind == "ffn"],
                }
            )
    log("verify: every pruned model timed interleaved with the dense one; held-out metric")
    measurement = config.measurement(rounds=config.verify_rounds)
    verification = verify_models(
        prepared.loaded.adapter, {"dense": prepared.loaded.model, **models}, measurement, progress=progress
    )
    dense_metric = prepared.task.evaluate(prepared.loaded.model)
    for row in rows:
        key = row.pop("key")
        row["measured_speedup"] = verification.speedup(key).value
        row["pruned_ms"] = verification[key].median_ms
        row["dense_ms"] = verification["dense"].median_ms
        row["metric_name"] = dense_metric.name
        row["metric"] = prepared.task.evaluate(models[key]).value
        row["dense_metric"] = dense_metric.value
    frame = plots.pareto_frame(rows)
    with atomic_dir(target, overwrite=True) as tmp:
        frame.to_csv(tmp / "pareto.csv", index=False)
        plots.save_figure(plots.plot_pareto(frame, dense_metric=dense_metric.value), tmp / "pareto")
    return frame
