"""A run folder: the data files of a run, then the readable report and plots drawn from them.

``render_folder`` (``planner report DIR``) redraws ``report.md`` and the plots from the files alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.records.plan import Plan
from planner.records.report import Report
from profilers import LatencyTable
from profilers.atomic import atomic_dir


def write_run_folder(
    target: Path,
    *,
    report: Report,
    table: LatencyTable,
    plan: Plan,
    write_model: Callable[[Path], object],
    search_history: Sequence[Any] | None,
) -> None:
    """Write a run's data files (table, plan, report, search history; the pruned model by
    ``write_model(folder)`` into ``pruned/``), then the readable report and plots drawn from them;
    atomically (a temporary sibling renamed at the end).

    Args:
        search_history: the search's history entries (``solvers`` results' ``history``), or None.
    """
    import planner.report.plots as plots

    with atomic_dir(target, overwrite=True) as tmp:
        table.save(tmp / "table.csv")
        plan.save(tmp / "plan.json")
        write_model(tmp / "pruned")
        report.save(tmp / "report.json")
        if search_history is not None:
            plots.search_frame(search_history).to_csv(tmp / "search_history.csv", index=False)
        render_folder(tmp)


def render_folder(folder: str | Path) -> list[Path]:
    """``planner report DIR``: draw the plots and ``report.md`` of a run folder from its files."""
    import pandas as pd

    import planner.report.plots as plots
    from planner.report.markdown import render_report

    root = Path(folder)
    for name in ("report.json", "table.csv", "plan.json"):
        if not (root / name).is_file():
            raise PlannerError(
                f"{root} is not a `planner run` folder (no {name}); run `planner run --out {root}` first."
            )
    report = Report.load(root / "report.json")
    table = LatencyTable.load(root / "table.csv")
    plan = Plan.load(root / "plan.json")
    written: list[Path] = []
    written += plots.save_figure(plots.plot_latency(plots.latency_frame(table)), root / "latency_table")
    written += plots.save_figure(plots.plot_allocation(plots.allocation_frame(plan)), root / "allocation")
    points = [
        {
            "label": "dense",
            "predicted_ms": report.dense_predicted_ms,
            "measured_ms": report.dense_ms,
            "measured_p10_ms": report.dense_p10_ms,
            "measured_p90_ms": report.dense_p90_ms,
        },
        {
            "label": "pruned",
            "predicted_ms": report.predicted_ms,
            "measured_ms": report.pruned_ms,
            "measured_p10_ms": report.pruned_p10_ms,
            "measured_p90_ms": report.pruned_p90_ms,
        },
    ]
    written += plots.save_figure(plots.plot_prediction(plots.prediction_frame(points)), root / "predicted_vs_measured")
    history = root / "search_history.csv"
    if history.is_file():
        frame = pd.read_csv(history)
        if not frame.empty:
            written += plots.save_figure(plots.plot_search(frame), root / "search_history")
    if report.recovery is not None:
        curve = plots.recovery_frame(report.recovery["validation"])
        written += plots.save_figure(plots.plot_recovery(curve), root / "recovery")
    (root / "report.md").write_text(render_report(report), encoding="utf-8")
    written.append(root / "report.md")
    return written
