"""The evolutionary search's contract: every candidate within budget, deterministic per seed, finds
the true optimum of small problems (also non-additive ones where the DP over summed scores is wrong),
never worse than its best seed, multi-step selection on growing samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from solvers import (
    InfeasibleBudgetError,
    Seed,
    evolutionary_search,
    repair_levels,
    solve_dp,
    solve_uniform,
)


def _problem(units: int, levels: int, seed: int):  # type: ignore[no-untyped-def]
    """Costs falling with the level, additive guide errors, and a true loss with interactions."""
    rng = np.random.default_rng(seed)
    costs = [np.sort(rng.uniform(1.0, 10.0, levels))[::-1].copy() for _ in range(units)]
    guide = [np.sort(rng.uniform(0.0, 1.0, levels)) - 0.0 for _ in range(units)]
    for g in guide:
        g -= g[0]
    pairs = rng.uniform(0.0, 1.5, (units, units))
    budget = 0.55 * sum(float(c[0]) for c in costs)

    def true_loss(chosen: tuple[int, ...]) -> float:
        # Additive part as the guide says, plus a penalty when neighbours are both compressed:
        # the kind of interaction a DP over per-unit scores cannot see.
        additive = sum(g[k] for g, k in zip(guide, chosen, strict=True))
        frac = np.asarray(chosen) / (levels - 1)
        return float(additive + sum(pairs[i, i + 1] * frac[i] * frac[i + 1] for i in range(units - 1)))

    return costs, guide, budget, true_loss


def _optimum(costs, budget, loss):  # type: ignore[no-untyped-def]
    best = (np.inf, None)
    for chosen in itertools.product(*[range(c.size) for c in costs]):
        if sum(c[k] for c, k in zip(costs, chosen, strict=True)) <= budget + 1e-9:
            best = min(best, (loss(chosen), chosen), key=lambda b: b[0])
    return best


def _seeds(costs, guide, budget) -> list[Seed]:  # type: ignore[no-untyped-def]
    dp = solve_dp(costs, guide, budget)
    uniform = solve_uniform(costs, guide, budget)
    return [Seed(dp.levels, tuple([1.0] * len(costs)), "dp"), Seed(uniform.levels, None, "uniform")]


@pytest.mark.parametrize("space", ["levels", "coefficients", "mixed"])
def test_every_candidate_is_within_the_budget(space: str) -> None:
    costs, guide, budget, loss = _problem(units=8, levels=5, seed=0)
    seen: list[tuple[int, ...]] = []

    def evaluate(chosen: tuple[int, ...], step: int) -> float:
        seen.append(chosen)
        return loss(chosen)

    evolutionary_search(
        costs, budget, evaluate, _seeds(costs, guide, budget), curves=guide, space=space, max_generations=30
    )
    assert len(seen) > 50
    worst = max(sum(c[k] for c, k in zip(costs, chosen, strict=True)) for chosen in seen)
    assert worst <= budget + 1e-9


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    costs, guide, budget, loss = _problem(units=10, levels=6, seed=1)
    seeds = _seeds(costs, guide, budget)

    def run(seed: int):  # type: ignore[no-untyped-def]
        trace: list[tuple[tuple[int, ...], int]] = []

        def evaluate(chosen: tuple[int, ...], step: int) -> float:
            trace.append((chosen, step))
            return loss(chosen) + 0.01 * step

        result = evolutionary_search(costs, budget, evaluate, seeds, curves=guide, seed=seed, max_generations=15)
        return result, trace

    a, trace_a = run(7)
    b, trace_b = run(7)
    _, trace_c = run(8)
    assert trace_a == trace_b
    assert a.solution == b.solution and a.loss == b.loss
    untimed = [[(g.generation, g.evaluations, g.step_best, g.parent_loss) for g in r.history] for r in (a, b)]
    assert untimed[0] == untimed[1]
    assert trace_a != trace_c


@pytest.mark.parametrize("space", ["levels", "mixed"])
@pytest.mark.parametrize("problem_seed", [0, 1, 2, 4])
def test_finds_the_true_optimum_where_the_dp_over_summed_scores_is_wrong(problem_seed: int, space: str) -> None:
    # (Coefficient space alone cannot reach every plan: the DP over scaled guide errors never makes
    # some allocations, e.g. problems 0 and 1 here; level mutations with repair can.)
    costs, guide, budget, loss = _problem(units=6, levels=4, seed=problem_seed)
    optimum_loss, _ = _optimum(costs, budget, loss)
    dp = solve_dp(costs, guide, budget)
    assert loss(dp.levels) > optimum_loss + 1e-9, "the interaction must make the DP's plan wrong here"
    result = evolutionary_search(
        costs,
        budget,
        lambda chosen, _step: loss(chosen),
        _seeds(costs, guide, budget),
        curves=guide,
        space=space,
        seed=0,
        max_generations=300,
        patience=60,
    )
    assert result.loss == pytest.approx(optimum_loss)
    assert loss(result.solution.levels) == pytest.approx(optimum_loss)
    assert result.solution.cost_ms <= budget + 1e-9


def test_never_worse_than_its_best_seed() -> None:
    costs, guide, budget, _ = _problem(units=8, levels=5, seed=3)
    seeds = _seeds(costs, guide, budget)
    # A loss that punishes every change from the DP seed: no offspring can beat it.
    dp_levels = seeds[0].levels

    def evaluate(chosen: tuple[int, ...], step: int) -> float:
        return float(sum(abs(a - b) for a, b in zip(chosen, dp_levels, strict=True)))

    result = evolutionary_search(costs, budget, evaluate, seeds, curves=guide, max_generations=20)
    assert result.solution.levels == dp_levels
    assert result.loss == 0.0
    assert dict(result.seed_losses)["dp"] == 0.0
    assert not any(g.improved for g in result.history)
    assert result.loss <= min(loss for _, loss in result.seed_losses)


def test_multi_step_selection_scores_fewer_candidates_on_larger_samples() -> None:
    costs, guide, budget, loss = _problem(units=8, levels=5, seed=4)
    per_step: dict[int, int] = {0: 0, 1: 0, 2: 0}

    def evaluate(chosen: tuple[int, ...], step: int) -> float:
        per_step[step] += 1
        return loss(chosen)

    result = evolutionary_search(
        costs, budget, evaluate, _seeds(costs, guide, budget), curves=guide, selection=(8, 3, 1), max_generations=10
    )
    generations = result.generations
    assert generations == 10
    assert per_step[0] <= 8 * generations + 2
    assert per_step[1] <= 3 * generations + 2
    assert per_step[2] <= 1 * generations + 2
    assert per_step[0] > per_step[1] > per_step[2] >= 2  # the seeds are scored on every step
    assert all(len(g.step_best) == 3 for g in result.history)
    assert [g.generation for g in result.history] == list(range(1, 11))
    assert all(g.parent_loss >= result.loss for g in result.history)
    assert all(a.evaluations <= b.evaluations for a, b in itertools.pairwise(result.history))


def test_the_winner_is_judged_on_the_last_step_not_the_screen() -> None:
    # Step 0 (small sample) prefers compressing unit 0; the last step (the truth) prefers unit 1.
    costs = [np.array([10.0, 4.0]), np.array([10.0, 4.0]), np.array([10.0, 9.0])]
    budget = 24.0

    def evaluate(chosen: tuple[int, ...], step: int) -> float:
        if step == 0:
            return {(1, 0, 0): 0.0, (0, 1, 0): 1.0}.get(chosen, 2.0)
        return {(1, 0, 0): 1.0, (0, 1, 0): 0.0}.get(chosen, 2.0)

    seeds = [Seed((1, 0, 0), None, "first")]
    result = evolutionary_search(costs, budget, evaluate, seeds, selection=(4, 4), max_generations=10)
    assert result.solution.levels == (0, 1, 0)
    assert result.loss == 0.0


def test_stops_on_time_and_on_no_improvement() -> None:
    costs, guide, budget, loss = _problem(units=8, levels=5, seed=5)
    seeds = _seeds(costs, guide, budget)
    timed = evolutionary_search(costs, budget, lambda c, s: loss(c), seeds, curves=guide, max_seconds=0.2)
    assert timed.stopped == "max_seconds"
    assert timed.history and timed.history[-1].seconds < 0.2 + 0.5
    idle = evolutionary_search(costs, budget, lambda c, s: 1.0, seeds, curves=guide, patience=3)
    assert idle.stopped == "no_improvement"
    assert idle.generations == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selection": (4, 8)}, "non-increasing"),
        ({"selection": ()}, "non-increasing"),
        ({"space": "genes"}, "one of levels, coefficients, mixed"),
        ({"max_generations": 0}, "'max_generations' parameter must be an integer >= 1"),
        ({"max_seconds": -1.0}, "'max_seconds' parameter must be > 0"),
        ({"max_generations": None}, "so the search stops"),
    ],
)
def test_rejects_bad_settings(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    costs, guide, budget, loss = _problem(units=4, levels=3, seed=0)
    options = {"max_generations": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        evolutionary_search(costs, budget, lambda c, s: loss(c), _seeds(costs, guide, budget), **options)


def test_rejects_seeds_over_the_budget_and_non_finite_losses() -> None:
    costs, guide, budget, _ = _problem(units=4, levels=3, seed=0)
    dense = Seed(tuple([0] * 4), None, "dense")
    with pytest.raises(ValueError, match=r"seed 'dense' costs .* over the budget"):
        evolutionary_search(costs, budget, lambda c, s: 0.0, [dense], max_generations=1)
    with pytest.raises(ValueError, match="finite loss"):
        evolutionary_search(costs, budget, lambda c, s: float("nan"), _seeds(costs, guide, budget), max_generations=1)


def test_repair_fits_the_budget_and_keeps_frozen_units_where_it_can() -> None:
    costs, guide, budget, _ = _problem(units=8, levels=5, seed=6)
    dense = [0] * 8
    repaired = repair_levels(costs, guide, budget, dense, frozen={0, 1})
    assert sum(c[k] for c, k in zip(costs, repaired, strict=True)) <= budget + 1e-9
    assert repaired[0] == 0 and repaired[1] == 0
    # Slack is spent: no single unit can move to a lower-error level and still fit.
    slack = budget - sum(c[k] for c, k in zip(costs, repaired, strict=True))
    for unit in range(2, 8):
        for level in range(5):
            if guide[unit][level] < guide[unit][repaired[unit]]:
                assert costs[unit][level] - costs[unit][repaired[unit]] > slack
    with pytest.raises(InfeasibleBudgetError):
        repair_levels(costs, guide, 0.1, dense)
