"""Contract tests run over every solver, plus exactness checks of the DP."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from solvers import (
    InfeasibleBudgetError,
    Solution,
    bucketize,
    solve_depth,
    solve_dp,
    solve_milp,
    solve_threshold,
    threshold_levels,
)


def _dp_exact(costs, errors, budget):  # type: ignore[no-untyped-def]
    return solve_dp(costs, errors, budget, refine=False)


ALL_SOLVERS: dict[str, Callable[..., Solution]] = {
    **solvers.SOLVERS,
    "dp-exact": _dp_exact,
}


def random_instance(rng: np.random.Generator, units: int, max_levels: int, *, monotone: bool = False):  # type: ignore[no-untyped-def]
    costs, errors = [], []
    for _ in range(units):
        n = int(rng.integers(1, max_levels + 1))
        c = rng.uniform(0.0, 10.0, n)
        if monotone:
            c = np.sort(c)[::-1]
        if n > 1 and rng.random() < 0.3:
            c[rng.integers(n)] = 0.0  # zero-cost level ("block removed")
        costs.append(c)
        errors.append(np.sort(rng.uniform(0.0, 1.0, n)))
    return costs, errors


def brute_force(costs, errors, budget):  # type: ignore[no-untyped-def]
    best = (np.inf, None)
    for combo in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(c[k] for c, k in zip(costs, combo, strict=True))
        if cost <= budget:
            err = sum(e[k] for e, k in zip(errors, combo, strict=True))
            if err < best[0]:
                best = (err, combo)
    return best


@pytest.mark.parametrize("name", sorted(ALL_SOLVERS))
@pytest.mark.parametrize("seed", range(6))
def test_every_solver_respects_budget_and_returns_valid_levels(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    costs, errors = random_instance(rng, units=6, max_levels=7)
    dense = sum(float(c[0]) for c in costs)
    fastest = sum(float(c.min()) for c in costs)
    most_compressed = sum(float(c[-1]) for c in costs)  # so uniform (fraction 1) always has a plan
    budget = max(fastest + 0.4 * (dense - fastest), most_compressed) + 1e-3
    solution = ALL_SOLVERS[name](costs, errors, budget)
    assert len(solution.levels) == len(costs)
    assert all(0 <= k < len(c) for k, c in zip(solution.levels, costs, strict=True))
    assert solution.cost_ms <= budget
    assert solution.cost_ms == pytest.approx(sum(c[k] for c, k in zip(costs, solution.levels, strict=True)))
    assert solution.error == pytest.approx(sum(e[k] for e, k in zip(errors, solution.levels, strict=True)))


@pytest.mark.parametrize("name", sorted(ALL_SOLVERS))
def test_every_solver_raises_infeasible_below_the_fastest_plan(name: str) -> None:
    costs = [np.array([3.0, 2.0]), np.array([4.0, 1.0])]
    errors = [np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    with pytest.raises(InfeasibleBudgetError) as info:
        ALL_SOLVERS[name](costs, errors, 2.5)
    assert info.value.min_cost_ms == pytest.approx(3.0)


@pytest.mark.parametrize("name", sorted(ALL_SOLVERS))
def test_every_solver_takes_the_fastest_plan_at_a_budget_a_rounding_error_below_it(name: str) -> None:
    """dense / (dense / fastest) can come back one ulp under the fastest plan (a sweep at max_speedup)."""
    costs = [np.array([0.2365845, 0.20428911, 0.02516196]), np.array([0.117974, 0.09625322, 0.08214513])]
    fastest = float(sum(c.min() for c in costs))
    errors = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])]
    solution = ALL_SOLVERS[name](costs, errors, np.nextafter(fastest, 0.0))
    assert solution.levels == (2, 2)


@pytest.mark.parametrize("name", sorted(ALL_SOLVERS))
@pytest.mark.parametrize(
    ("costs", "errors", "budget", "message"),
    [
        ([np.array([1.0, np.nan])], [np.array([0.0, 1.0])], 1.0, "unit 0"),
        ([np.array([1.0]), np.array([1.0, -2.0])], [np.array([0.0]), np.array([0.0, 1.0])], 1.0, "unit 1"),
        ([np.array([1.0, np.inf])], [np.array([0.0, 1.0])], 1.0, "unit 0"),
        ([np.array([1.0, 0.5])], [np.array([0.0])], 1.0, "unit 0"),
        ([np.array([])], [np.array([])], 1.0, "no levels"),
        ([np.array([1.0])], [np.array([0.0]), np.array([0.0])], 1.0, "1 units"),
        ([np.array([1.0])], [np.array([np.nan])], 1.0, "unit 0"),
        ([np.array([1.0])], [np.array([0.0])], 0.0, "budget_ms"),
        ([np.array([1.0])], [np.array([0.0])], -1.0, "budget_ms"),
    ],
)
def test_every_solver_rejects_bad_input(name: str, costs, errors, budget, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        ALL_SOLVERS[name](costs, errors, budget)


def test_dp_rejects_bad_bucket_count() -> None:
    with pytest.raises(ValueError, match="buckets"):
        solve_dp([np.array([1.0])], [np.array([0.0])], 1.0, buckets=0)


@pytest.mark.parametrize("seed", range(25))
def test_dp_equals_brute_force_on_its_integer_problem(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    costs, errors = random_instance(rng, units=int(rng.integers(1, 6)), max_levels=5)
    dense = sum(float(c.max()) for c in costs)
    fastest = sum(float(c.min()) for c in costs)
    budget = fastest + rng.uniform(0.05, 1.0) * (dense - fastest) + 1e-6
    buckets = int(rng.integers(5, 60))
    problem = bucketize(costs, budget, buckets)
    int_costs = [k.astype(float) for k in problem.bucket_costs]
    best_error, _ = brute_force(int_costs, errors, float(buckets))
    solution = solve_dp(costs, errors, budget, buckets=buckets, refine=False)
    assert solution.error == pytest.approx(best_error, rel=1e-5, abs=1e-6)
    # ... and the same as an exact MILP on the same integer costs.
    assert solve_milp(int_costs, errors, float(buckets)).error == pytest.approx(best_error, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("seed", range(25))
def test_dp_with_refinement_is_between_the_integer_and_continuous_optima(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    costs, errors = random_instance(rng, units=int(rng.integers(1, 6)), max_levels=5)
    dense = sum(float(c.max()) for c in costs)
    fastest = sum(float(c.min()) for c in costs)
    budget = fastest + rng.uniform(0.05, 1.0) * (dense - fastest) + 1e-6
    continuous_best, _ = brute_force(costs, errors, budget)
    exact = solve_dp(costs, errors, budget, buckets=50, refine=False)
    refined = solve_dp(costs, errors, budget, buckets=50)
    assert continuous_best - 1e-9 <= refined.error <= exact.error + 1e-9
    assert refined.cost_ms <= budget
    fine = solve_dp(costs, errors, budget, buckets=100_000)
    assert fine.error == pytest.approx(continuous_best, rel=1e-4, abs=1e-5)


def test_dp_handles_non_monotone_costs_exactly() -> None:
    # Level 1 is SLOWER than dense (as for 40% sparsity on many CPU layers); level 2 is fast.
    costs = [np.array([10.0, 12.0, 4.0]), np.array([10.0, 3.0, 11.0])]
    errors = [np.array([0.0, 0.1, 1.0]), np.array([0.0, 0.5, 0.6])]
    solution = solve_dp(costs, errors, 14.0)
    assert solution.levels == (2, 0) or solution.levels == (0, 1)
    assert solution.levels == (0, 1)  # error 0.5 beats 1.0
    assert solution.cost_ms == pytest.approx(13.0)


def test_dp_exact_budget_equal_to_fastest_plan() -> None:
    costs = [np.array([5.0, 2.0, 2.0]), np.array([4.0, 1.0])]
    errors = [np.array([0.0, 0.7, 0.3]), np.array([0.0, 1.0])]
    solution = solve_dp(costs, errors, 3.0)
    assert solution.levels == (2, 1)
    assert solution.cost_ms == pytest.approx(3.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.floats(0, 20), st.floats(-1, 5)), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ),
    st.floats(0.0, 1.0),
)
def test_dp_property_never_over_budget_and_never_worse_than_brute_force(units, fraction) -> None:  # type: ignore[no-untyped-def]
    costs = [np.array([c for c, _ in unit]) for unit in units]
    errors = [np.array([e for _, e in unit]) for unit in units]
    fastest = sum(float(c.min()) for c in costs)
    dense = sum(float(c.max()) for c in costs)
    budget = fastest + fraction * (dense - fastest) + 1e-3
    solution = solve_dp(costs, errors, budget, buckets=200)
    assert solution.cost_ms <= budget
    best_error, _ = brute_force(costs, errors, budget)
    assert solution.error >= best_error - 1e-6


def test_uniform_takes_the_least_compression_that_fits() -> None:
    costs = [np.array([4.0, 3.0, 2.0, 1.0])] * 3
    errors = [np.array([0.0, 0.1, 0.2, 0.3])] * 3
    solution = solvers.solve_uniform(costs, errors, 9.0)
    assert solution.levels == (1, 1, 1)


def test_greedy_prefers_the_cheapest_error_per_millisecond() -> None:
    costs = [np.array([10.0, 5.0]), np.array([10.0, 5.0])]
    errors = [np.array([0.0, 1.0]), np.array([0.0, 0.1])]
    assert solvers.solve_greedy(costs, errors, 15.0).levels == (0, 1)


def test_registry_lists_available_solvers() -> None:
    with pytest.raises(ValueError, match="unknown solver 'dpp'; available: dp, greedy, milp, uniform"):
        solvers.get_solver("dpp")


def test_spdy_prior_shape() -> None:
    curves = solvers.spdy_prior([1, 3])
    assert curves[0].tolist() == [0.0]
    assert curves[1].tolist() == [0.0, 0.25, 1.0]


def test_depth_removes_the_least_influential_layers_until_the_plan_fits() -> None:
    # two layers x (attention, ffn); each unit's last level removes it
    costs = [np.array([4.0, 2.0, 0.5]), np.array([6.0, 3.0, 0.5])] * 2
    layers, removed = [0, 0, 1, 1], [2, 2, 2, 2]
    influence = np.array([0.3, 0.1])  # layer 1 goes first
    solution = solve_depth(costs, layers, removed, influence, budget_ms=12.0)
    assert solution.levels == (0, 0, 2, 2)
    assert solution.cost_ms == pytest.approx(11.0) and solution.error == pytest.approx(0.1)
    assert solve_depth(costs, layers, removed, influence, budget_ms=20.0).levels == (0, 0, 0, 0)
    assert solve_depth(costs, layers, removed, influence, budget_ms=2.0).levels == (2, 2, 2, 2)
    with pytest.raises(InfeasibleBudgetError):
        solve_depth(costs, layers, removed, influence, budget_ms=1.0)
    with pytest.raises(ValueError, match="layer_of_unit"):
        solve_depth(costs, [0, 0, 1, 2], removed, influence, budget_ms=12.0)


def test_threshold_keeps_what_scores_above_one_global_cut_rounded_up_to_a_level() -> None:
    costs = [np.array([4.0, 3.0, 2.0, 1.0, 0.0]), np.array([2.0, 1.0, 0.0])]
    kept = [np.array([4, 3, 2, 1, 0]), np.array([4, 2, 0])]  # the second unit keeps 4, 2 or 0 elements
    scores = [np.array([0.5, -1.0, 1.5, 0.0]), np.array([-0.5, 2.0, 1.0, -2.0])]
    assert threshold_levels(scores, kept, 0.2) == [2, 1]  # 2 above the cut; 2 above the cut
    assert threshold_levels(scores, kept, -0.7) == [1, 0]  # 3 elements; 3 need the dense level (4)
    solution = solve_threshold(costs, scores, kept, budget_ms=3.5)
    # the lowest cut that fits: 0.5 keeps {0.5, 1.5} (2.0 ms) and {2.0, 1.0} (1.0 ms)
    assert solution.levels == (2, 1) and solution.cost_ms == pytest.approx(3.0)
    assert solution.error == pytest.approx(-1.0 + 0.0 + -2.0 + -0.5)
    assert solve_threshold(costs, scores, kept, budget_ms=100.0).levels == (0, 0)
    with pytest.raises(ValueError, match="unit 1"):
        solve_threshold(costs, scores, [kept[0], np.array([4, 2])], budget_ms=3.5)
