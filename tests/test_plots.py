"""Plot data is computed apart from drawing: check the frames, then that drawing works."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from planner.records.plan import UnitChoice
from planner.report import plots
from solvers import SearchStep
from tests.test_table import make_table
from tests.tiny_models import plan_of


def test_latency_frame_lists_each_shape_once() -> None:
    frame = plots.latency_frame(make_table())
    assert len(frame) == 7  # u0: 3 levels, u1: 4 levels (different signatures)
    u1 = frame[frame["signature"] == "sig-u1"].sort_values("level")
    assert u1["fraction_kept"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert u1["latency_ms"].tolist() == [20.0, 25.0, 5.0, 2.0]


def test_allocation_prediction_search_and_pareto_frames(tmp_path: Path) -> None:
    plan = plan_of(
        UnitChoice(
            "encoder.layer.0.attention", "attention", 3, "heads", kept=9, keep=tuple(range(9)), size=12, layer=0
        ),
        UnitChoice("encoder.layer.0.ffn", "ffn", 4, "neurons", kept=768, keep=tuple(range(768)), size=1536, layer=0),
        architecture="bert",
        backend="fisher",
    )
    alloc = plots.allocation_frame(plan)
    assert alloc["fraction_kept"].tolist() == [0.75, 0.5] and alloc["layer"].tolist() == [0, 0]
    pred = plots.prediction_frame(
        [
            {
                "label": "dense",
                "predicted_ms": 100.0,
                "measured_ms": 100.0,
                "measured_p10_ms": 95.0,
                "measured_p90_ms": 105.0,
            },
            {
                "label": "pruned",
                "predicted_ms": 45.0,
                "measured_ms": 50.0,
                "measured_p10_ms": 48.0,
                "measured_p90_ms": 52.0,
            },
        ]
    )
    assert pred["error_pct"].tolist() == pytest.approx([0.0, -10.0])
    history = [SearchStep(1, "start", 0.5, 0.5, 0.1, 0), SearchStep(2, "random", 0.3, 0.3, 0.2, 0)]
    search = plots.search_frame(history)
    assert search["best_loss"].tolist() == [0.5, 0.3]
    pareto = plots.pareto_frame(
        [
            {"method": "b", "target_speedup": 2.0, "measured_speedup": 1.9, "metric_name": "accuracy", "metric": 0.9},
            {"method": "a", "target_speedup": 3.0, "measured_speedup": 2.8, "metric_name": "accuracy", "metric": 0.8},
            {"method": "a", "target_speedup": 2.0, "measured_speedup": 2.1, "metric_name": "accuracy", "metric": 0.95},
        ]
    )
    assert pareto["method"].tolist() == ["a", "a", "b"] and pareto["target_speedup"].tolist() == [2.0, 3.0, 2.0]
    # Drawing works and writes PNG + SVG.
    written = []
    written += plots.save_figure(plots.plot_allocation(alloc), tmp_path / "alloc")
    written += plots.save_figure(plots.plot_prediction(pred), tmp_path / "pred")
    written += plots.save_figure(plots.plot_search(search), tmp_path / "search")
    written += plots.save_figure(plots.plot_pareto(pareto, dense_metric=0.97), tmp_path / "pareto")
    written += plots.save_figure(plots.plot_latency(plots.latency_frame(make_table())), tmp_path / "lat")
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)
    assert isinstance(pareto, pd.DataFrame)
    # Perplexity spans orders of magnitude once a model breaks: drawn on a log axis.
    ppl = pareto.assign(metric_name="perplexity", metric=[40.0, 900.0, 4e6])
    assert plots.plot_pareto(ppl, dense_metric=30.0).get_yscale() == "log"
    assert plots.plot_pareto(pareto, dense_metric=0.97).get_yscale() == "linear"
