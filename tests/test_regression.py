"""Behaviour kept across refactors: for a stored MiniLM-shaped latency table and a fixed seed,
`planner plan` chooses the levels (and heads / neurons) recorded in tests/data/regression/expected.json.

The Fisher entries were made with the code before the stage refactor and held through it; they were
re-recorded once, on purpose, when MiniLM's fitted classification head stopped being fitted on the
guard split (2026-12-05): Fisher scores are gradients of the loss through that head, so a head fitted
on other documents moves some levels by 1-3 steps at the same predicted latency (within 0.1%). The
magnitude entries were re-recorded once, on purpose, when magnitude scores changed from the output
projection alone to the group L2 mass of every weight a head / neuron owns (the uniform plans' levels
did not change, only which heads and neurons they keep).

What is compared is what the planner decides, in a way that means the same on every CPU: the level of
every unit exactly, the predicted latency, and which heads / neurons each unit keeps up to
``MAX_SWAPPED`` of them. The Fisher scores are sums of float32 gradients whose summation order differs
between CPU kernels (the expected file was written on an AMD EPYC; on an Intel Xeon with AVX-512/AMX
1-4 of 576-1152 kept FFN neurons of a unit (at most 0.7%) trade places with near-tied ones, never a head
or a level; the limit leaves room for other CPUs).
A behaviour change is still caught: without mask rearrangement the same plans keep 12-50% other heads
and up to 20% other neurons in a unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.config import RunConfig
from planner.workflows import create_plan

DATA = Path(__file__).resolve().parent / "data" / "regression"
EXPECTED = json.loads((DATA / "expected.json").read_text())
MAX_SWAPPED = 0.02
"""Share of a unit's kept heads / neurons that may differ from the expected ones (near-tied scores); a
single head of a 12-head unit is 8%, so heads must match exactly."""


def swapped_share(got: list[int] | None, want: list[int] | None) -> float:
    """Share of ``want`` replaced by other indices in ``got`` (0 for units without a keep list)."""
    if not want:
        return 0.0 if not got else 1.0
    return len(set(want) - set(got or [])) / len(want)


def _check(key: str) -> None:
    backend, solver, speedup = key.split("/")
    config = RunConfig(backend=backend, solver=solver, speedup=float(speedup), calibration_size=64, seed=0)
    plan = create_plan(config, table=DATA / "table.csv")
    want = EXPECTED[key]
    assert [c.level for c in plan.units] == want["levels"]
    assert plan.predicted_ms == pytest.approx(want["predicted_ms"], rel=1e-9)
    got = [None if c.keep is None else list(c.keep) for c in plan.units]
    assert [len(k or []) for k in got] == [len(k or []) for k in want["keep"]]
    swapped = {c.unit: swapped_share(g, w) for c, g, w in zip(plan.units, got, want["keep"], strict=True)}
    assert max(swapped.values()) <= MAX_SWAPPED, {u: round(v, 4) for u, v in swapped.items() if v > 0}


def test_swapped_share_counts_replaced_indices() -> None:
    assert swapped_share([0, 1, 2, 3], [0, 1, 2, 3]) == 0.0
    assert swapped_share([0, 1, 2, 4], [0, 1, 2, 3]) == 0.25
    assert swapped_share(None, None) == 0.0
    assert swapped_share([1], []) == 1.0


@pytest.mark.parametrize("key", [k for k in EXPECTED if k.startswith("magnitude/")])
def test_magnitude_plans_are_unchanged(key: str) -> None:
    _check(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in EXPECTED if k.startswith("fisher/")])
def test_fisher_plans_are_unchanged(key: str) -> None:
    _check(key)
