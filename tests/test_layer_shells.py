"""Layer shells: the time a layer costs beyond its units, saved only when the layer is skipped whole.

The solvers that see them (DP, SPDY search, depth) must find what brute force finds; the profile
must fit a known shell back from whole-model timings; tables must predict with them and keep them
through save and load; a tiny Llama's table must carry its skippable layers.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import solvers
from planner.config import RunConfig
from profilers import LatencyTable
from profilers.calibration import CalibrationCurve, fit_layer_shell
from tests.test_table import make_table


def _problem(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four units (two layers of attention + FFN), 3-4 levels each, the last level removing the unit."""
    rng = np.random.default_rng(seed)
    costs, errors = [], []
    for size in (3, 4, 3, 4):
        cost = np.sort(rng.uniform(0.5, 5.0, size))[::-1].copy()
        cost[-1] = 0.05
        costs.append(cost)
        errors.append(np.concatenate([[0.0], np.sort(rng.uniform(0.0, 3.0, size - 1))]))
    return costs, errors


def _brute_force(costs, errors, budget, couplings):  # type: ignore[no-untyped-def]
    best = (np.inf, None)
    for levels in itertools.product(*(range(c.size) for c in costs)):
        cost = sum(c[k] for c, k in zip(costs, levels, strict=True)) + solvers.shells_paid(couplings, levels)
        error = sum(e[k] for e, k in zip(errors, levels, strict=True))
        if cost <= budget + 1e-9 and error < best[0]:
            best = (error, levels)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_dp_with_shells_finds_what_brute_force_finds(seed: int) -> None:
    costs, errors = _problem(seed)
    couplings = [solvers.Coupling(0, 2, 1, 3, 2.0), solvers.Coupling(2, 2, 3, 3, 2.0)]
    dense = sum(c[0] for c in costs) + 4.0
    for share in (0.3, 0.5, 0.8):
        budget = share * dense
        best_error, _ = _brute_force(costs, errors, budget, couplings)
        try:
            solution = solvers.solve_dp(costs, errors, budget, couplings=couplings)
        except solvers.InfeasibleBudgetError:
            assert best_error == np.inf
            continue
        paid = sum(c[k] for c, k in zip(costs, solution.levels, strict=True))
        paid += solvers.shells_paid(couplings, solution.levels)
        assert solution.cost_ms == pytest.approx(paid) and paid <= budget + 1e-9
        assert solution.error == pytest.approx(best_error, abs=1e-9)


def test_skipping_a_layer_is_chosen_when_only_its_shell_makes_the_plan_fit() -> None:
    costs = [np.array([3.0, 1.0, 0.1]), np.array([4.0, 2.0, 0.1])] * 2
    errors = [np.array([0.0, 1.0, 5.0])] * 4
    couplings = [solvers.Coupling(0, 2, 1, 2, 4.0), solvers.Coupling(2, 2, 3, 2, 4.0)]
    budget = 0.2 + 7.0 + 4.0  # layer 0 skipped, layer 1 dense with its shell
    solution = solvers.solve_dp(costs, errors, budget, couplings=couplings)
    assert solution.levels == (2, 2, 0, 0) and solution.error == pytest.approx(10.0)
    # Blind to shells (every shell charged up front) the DP must cut both layers: error 12.
    assert solvers.solve_dp(costs, errors, budget - 8.0).error == pytest.approx(12.0)


def test_zero_shells_change_nothing() -> None:
    costs, errors = _problem(3)
    budget = 0.6 * sum(c[0] for c in costs)
    plain = solvers.solve_dp(costs, errors, budget)
    coupled = solvers.solve_dp(costs, errors, budget, couplings=[solvers.Coupling(0, 2, 1, 3, 0.0)])
    assert coupled.error == pytest.approx(plain.error) and coupled.cost_ms <= budget + 1e-9


def test_depth_with_shells_removes_fewer_layers() -> None:
    costs = [np.array([2.0, 0.0]), np.array([3.0, 0.0])] * 3
    couplings = [solvers.Coupling(2 * i, 1, 2 * i + 1, 1, 2.0) for i in range(3)]
    influence = np.array([0.3, 0.1, 0.2])
    budget = 3 * 7.0 - 7.0  # one layer's units and shell
    with_shells = solvers.solve_depth(costs, [0, 0, 1, 1, 2, 2], [1] * 6, influence, budget, couplings=couplings)
    assert with_shells.levels == (0, 0, 1, 1, 0, 0) and with_shells.cost_ms == pytest.approx(14.0)
    # Blind to shells (every shell charged up front) it must remove two layers for the same budget.
    blind = solvers.solve_depth(costs, [0, 0, 1, 1, 2, 2], [1] * 6, influence, budget - 6.0)
    assert sum(blind.levels) == 4


@pytest.mark.parametrize(
    ("coupling", "message"),
    [
        (solvers.Coupling(0, 5, 1, 1, 1.0), "level 5"),
        (solvers.Coupling(0, 1, 0, 1, 1.0), "more than one coupling"),
        (solvers.Coupling(0, 1, 1, 1, -1.0), ">= 0"),
    ],
)
def test_bad_couplings_are_refused(coupling: solvers.Coupling, message: str) -> None:
    costs = [np.array([2.0, 0.0]), np.array([3.0, 0.0])]
    with pytest.raises(ValueError, match=message):
        solvers.solve_dp(costs, [np.zeros(2), np.zeros(2)], 4.0, couplings=[coupling])


def test_the_profile_fits_a_known_shell_back() -> None:
    """Whole models on a true curve f(sum + shell x layers kept): the fit recovers the shell."""
    shell, layers = 0.8, 6

    def f(x: float) -> float:
        return 5.0 + 1.2 * x if x < 8 else 14.6 + 0.9 * (x - 8)

    sums = [30.0, 24.0, 18.0, 12.0, 6.0, 26.0, 18.0, 1.0]
    kept = [6, 6, 6, 6, 6, 4, 3, 0]  # the last three skip 2, 3 and all layers
    totals = [f(s + shell * k) for s, k in zip(sums, kept, strict=True)]
    assert fit_layer_shell(sums, totals, kept, layers) == pytest.approx(shell)
    # With it, every model lies on one curve of sum + shell x layers kept.
    curve = CalibrationCurve.fit([s + shell * k for s, k in zip(sums, kept, strict=True)], totals)
    for s, k, t in zip(sums, kept, totals, strict=True):
        assert curve.total(s + shell * k) == pytest.approx(t, rel=0.03)
    # Skipped layers measured slower than the curve (noise) never give a negative shell; no skipping, no shell.
    assert fit_layer_shell(sums, [*totals[:5], 38.6, 30.0, totals[-1]], kept, layers) == 0.0
    assert fit_layer_shell(sums[:5], totals[:5], kept[:5], layers) == 0.0


def _shelled(shell: float = 3.0) -> LatencyTable:
    """``make_table`` (units u0: 10/6/1 ms, u1: 20/25/5/2 ms) with u0 and u1 as one skippable layer."""
    table = make_table()
    meta = dataclasses.replace(
        table.meta,
        layer_shell_ms=shell,
        skip_pairs=(("u0", 2, "u1", 3),),
        calibration_sum_ms=(3.0, 33.0),
        calibration_total_ms=(13.0, 40.0),
    )
    return LatencyTable(frame=table.frame, meta=meta)


def test_a_table_predicts_with_its_shells_and_keeps_them(tmp_path: Path) -> None:
    table = _shelled()
    g = table.calibration.total
    assert table.predict_ms([0, 0]) == pytest.approx(g(30.0 + 3.0))
    assert table.predict_ms([2, 2]) == pytest.approx(g(6.0 + 3.0))  # both small, the layer still runs
    assert table.predict_ms([2, 3]) == pytest.approx(g(3.0))  # skipped: the shell is saved
    assert table.searched_dense_ms == pytest.approx(33.0) and table.fastest_sum_ms() == pytest.approx(3.0)
    assert table.max_speedup() == pytest.approx(table.meta.dense_ms / g(3.0))
    assert table.additive_budget_ms(20.0) == pytest.approx(17.0)
    loaded = LatencyTable.load(table.save(tmp_path / "t.csv"))
    assert loaded.meta == table.meta and loaded.predict_ms([2, 3]) == pytest.approx(table.predict_ms([2, 3]))


def test_a_version_4_table_loads_without_shells(tmp_path: Path) -> None:
    path = _shelled().save(tmp_path / "t.csv")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    for key in ("layer_shell_ms", "skip_pairs"):
        del meta[key]
    sidecar.write_text(json.dumps({**meta, "schema_version": 4}))
    loaded = LatencyTable.load(path)
    assert loaded.meta.layer_shell_ms == 0.0 and loaded.skip_pairs_indexed() == []
    assert loaded.predict_ms([2, 3]) == pytest.approx(loaded.calibration.total(3.0))


def test_a_tiny_llama_table_knows_its_skippable_layers(workspace: Path) -> None:
    from planner.models import load_model
    from planner.stages.profile.measure import DEPTH_ANCHORS, profile_model, skip_pairs

    loaded = load_model(str(workspace / "lm"))
    pairs = skip_pairs(loaded.adapter)
    units = {u.name: u for u in loaded.adapter.units()}
    assert len(pairs) == 2  # two layers
    for attention, a_level, ffn, f_level in pairs:
        assert units[attention].kind == "attention" and units[attention].levels[a_level].kept == 0
        assert units[ffn].kind == "ffn" and units[ffn].levels[f_level].kept == 0
    config = RunConfig(model=str(workspace / "lm"), phase="decode", batch_size=1, seq_len=16, rounds=2, threads=1)
    table = profile_model(loaded, config.measurement(), progress=False)
    assert {f"__{name}__" for name in DEPTH_ANCHORS} <= set(table.meta.anchor_ms)
    assert table.meta.layer_shell_ms >= 0.0
    assert table.meta.skip_pairs in ((), pairs)  # recorded where a shell was measured
    # A plan skipping every layer pays no shell; the dense model pays all of them.
    skipped = [0] * len(units)
    names = table.units()
    for attention, a_level, ffn, f_level in pairs:
        skipped[names.index(attention)], skipped[names.index(ffn)] = a_level, f_level
    costs = table.unit_costs()
    assert table.plan_sum_ms(skipped) == pytest.approx(sum(c[k] for c, k in zip(costs, skipped, strict=True)))
    shells = table.meta.layer_shell_ms * len(table.meta.skip_pairs)
    assert table.searched_dense_ms == pytest.approx(sum(c[0] for c in costs) + shells)


def test_an_encoder_has_no_skippable_layers() -> None:
    from planner.models import load_model
    from planner.stages.profile.measure import skip_pairs

    assert skip_pairs(load_model("minilm").adapter) == ()
