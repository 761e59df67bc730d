"""Behaviour kept across refactors: for a stored MiniLM-shaped latency table and a fixed seed,
`planner plan` chooses the levels (and heads / neurons) recorded in tests/data/regression/expected.json.

The Fisher entries were made with the code before the stage refactor and still hold. The magnitude
entries were re-recorded once, on purpose, when magnitude scores changed from the output projection
alone to the group L2 mass of every weight a head / neuron owns (the uniform plans' levels did not
change, only which heads and neurons they keep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.config import RunConfig
from planner.workflows import create_plan

DATA = Path(__file__).resolve().parent / "data" / "regression"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def _check(key: str) -> None:
    backend, solver, speedup = key.split("/")
    config = RunConfig(backend=backend, solver=solver, speedup=float(speedup), calibration_size=64, seed=0)
    plan = create_plan(config, table=DATA / "table.csv")
    want = EXPECTED[key]
    assert [c.level for c in plan.units] == want["levels"]
    assert [None if c.keep is None else list(c.keep) for c in plan.units] == want["keep"]
    assert plan.predicted_ms == pytest.approx(want["predicted_ms"], rel=1e-12)


@pytest.mark.parametrize("key", [k for k in EXPECTED if k.startswith("magnitude/")])
def test_magnitude_plans_are_unchanged(key: str) -> None:
    _check(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in EXPECTED if k.startswith("fisher/")])
def test_fisher_plans_are_unchanged(key: str) -> None:
    _check(key)
