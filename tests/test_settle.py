"""Settling the dense time before planning: the probes' measured / predicted speedups rescale the dense
time a run plans with (``planner.stages.profile.settle``, ``planner.records.settling``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from torch import nn

from planner.backends.fisher import FisherBackend
from planner.records.settling import FACTOR_LIMITS, DenseSettling, Probe
from planner.records.verification import ModelTiming, Verification
from planner.stages.profile.settle import settle_dense
from planner.stages.solve import probe_plans, solve_plan
from tests.tiny_models import classifier_setup, loaded_of, table_for


def _timing(ms: float, rounds: int = 8) -> ModelTiming:
    samples = tuple(ms * (1 + 0.001 * i) for i in range(rounds))
    return ModelTiming(float(np.median(samples)), min(samples), max(samples), samples)


def _fake_measure(speedups: Mapping[str, float], calls: list[list[str]], *, busy: bool = False):  # type: ignore[no-untyped-def]
    """A stand-in for verification's timing: every model named in ``speedups`` runs that much faster
    than the dense model's 100 ms (the real timing is exercised by the pipeline test)."""

    def measure(models: Mapping[str, nn.Module]) -> Verification:
        calls.append(list(models))
        timings = {"dense": _timing(100.0)}
        for name in models:
            if name != "dense":
                timings[name] = _timing(100.0 / speedups[name])
        loads = (0.9 if busy else 0.0,) * 8
        return Verification(timings=timings, runtime="torch", device="cpu", loads=loads)

    return measure


@pytest.fixture
def setup():  # type: ignore[no-untyped-def]
    model, adapter, task = classifier_setup()
    loaded = loaded_of(model, adapter)
    return loaded, table_for(adapter, loaded.fingerprint), FisherBackend().score(adapter, task)


def test_the_settled_dense_time_makes_the_probes_predict_what_was_measured(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, table, scores = setup
    probes = probe_plans(loaded, table, scores, 1.5)
    assert set(probes) == {"uniform", "dp"} and probes["uniform"] != probes["dp"]
    predicted = {k: table.meta.dense_ms / table.predict_ms(v) for k, v in probes.items()}
    measured = {k: 0.9 * v for k, v in predicted.items()}  # the table promised 11% too much
    calls: list[list[str]] = []
    settled, record = settle_dense(loaded, table, probes, _fake_measure(measured, calls))
    assert calls == [["dense", "uniform", "dp"]] and record.applied and record.rounds == 8
    assert record.factor == pytest.approx(0.9, rel=0.01)
    for name, levels in probes.items():  # the settled table predicts the probes as measured
        assert settled.meta.dense_ms / settled.predict_ms(levels) == pytest.approx(measured[name], rel=0.01)
    assert table.meta.dense_ms == record.table_dense_ms  # the profiled table is not changed
    # A plan made from the settled table aims higher on the table, so it lands on the target.
    plan = solve_plan(loaded=loaded, table=settled, scores=scores, backend=FisherBackend(), speedup=1.5)
    assert table.meta.dense_ms / plan.predicted_ms > 1.5 * 1.05 and plan.predicted_speedup >= 1.5 - 1e-9
    assert "dense time settled" in record.text() and "uniform" in record.text()


def test_probes_with_the_same_levels_are_timed_once(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, table, _scores = setup
    levels = [1] * len(loaded.adapter.units())
    calls: list[list[str]] = []
    predicted = table.meta.dense_ms / table.predict_ms(levels)
    _, record = settle_dense(
        loaded, table, {"uniform": levels, "dp": levels}, _fake_measure({"uniform": predicted}, calls)
    )
    assert calls == [["dense", "uniform"]] and [p.name for p in record.probes] == ["uniform"]
    assert record.factor == pytest.approx(1.0, rel=0.01)


def test_a_busy_probe_leaves_the_table_as_profiled(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, table, scores = setup
    probes = probe_plans(loaded, table, scores, 1.5)
    calls: list[list[str]] = []
    settled, record = settle_dense(loaded, table, probes, _fake_measure({"uniform": 1.2, "dp": 1.2}, calls, busy=True))
    assert settled is table and not record.applied and record.factor == 1.0
    assert "busy" in record.text() and "not settled" in record.text()


def test_an_unreachable_target_has_no_probes(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, table, scores = setup
    assert probe_plans(loaded, table, scores, 10 * table.max_speedup()) == {}
    settled, record = settle_dense(loaded, table, {}, _fake_measure({}, []))
    assert settled is table and not record.applied and "no probe" in record.reason


def test_the_factor_is_the_geometric_mean_and_is_clipped() -> None:
    probes = (Probe("uniform", 2.0, 1.8, 1.7, 1.9), Probe("dp", 2.0, 2.0, 1.9, 2.1))
    record = DenseSettling.from_probes(700.0, probes, rounds=10, busy=False)
    assert record.factor == pytest.approx(math.sqrt(0.9)) and record.dense_ms == pytest.approx(700 * math.sqrt(0.9))
    wild = DenseSettling.from_probes(700.0, (Probe("dp", 2.0, 5.0, 4.0, 6.0),), rounds=10, busy=False)
    assert wild.factor == FACTOR_LIMITS[1] and "re-profile" in wild.reason
