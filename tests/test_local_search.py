"""The SPDY local search: reproducible, cached, never worse than its start, keeps the best."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from solvers import local_search, solve_dp, spdy_prior


def _instance(units: int = 8, levels: int = 6, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    costs = [np.sort(rng.uniform(1.0, 10.0, levels))[::-1] for _ in range(units)]
    # The "true" loss weights units very differently; the prior treats them alike.
    weights = rng.uniform(0.0, 5.0, units)
    budget = 0.5 * sum(float(c[0]) for c in costs)

    calls: list[tuple[int, ...]] = []

    def evaluate(chosen: tuple[int, ...]) -> float:
        calls.append(chosen)
        return float(sum(w * (k / (levels - 1)) ** 2 for w, k in zip(weights, chosen, strict=True)))

    return costs, budget, evaluate, calls


def test_search_is_reproducible_and_improves_on_the_plain_dp() -> None:
    costs, budget, evaluate, _ = _instance()
    first = local_search(costs, budget, evaluate, seed=3, max_evaluations=150, random_starts=20, patience=10)
    second = local_search(costs, budget, evaluate, seed=3, max_evaluations=150, random_starts=20, patience=10)
    assert first.solution.levels == second.solution.levels
    assert first.coefficients == second.coefficients
    assert first.loss <= first.start_loss
    assert first.loss < first.start_loss  # weights differ, so the prior's plan is not the best
    plain = solve_dp(costs, spdy_prior([len(c) for c in costs]), budget)
    assert first.history[0].phase == "start"
    assert first.history[0].loss == pytest.approx(evaluate(plain.levels))
    assert first.solution.cost_ms <= budget


def test_search_evaluates_each_distinct_plan_once_and_keeps_the_best() -> None:
    costs, budget, evaluate, calls = _instance(seed=1)
    result = local_search(costs, budget, evaluate, seed=0, max_evaluations=60, random_starts=10, patience=5)
    assert len(calls) == len(set(calls)) == result.evaluations <= 60
    losses = [step.loss for step in result.history]
    assert result.loss == pytest.approx(min(losses))
    assert [s.best_loss for s in result.history] == list(np.minimum.accumulate(losses))


def test_the_last_unit_can_be_mutated() -> None:
    # Budget for compressing exactly one unit; the plain DP compresses unit 0 or 1 (cheaper), but the
    # loss is zero only when the LAST unit is compressed, which needs its coefficient resampled.
    costs = [np.array([10.0, 4.0]), np.array([10.0, 4.0]), np.array([10.0, 4.5])]
    result = local_search(
        costs, 25.0, lambda k: 0.0 if k == (0, 0, 1) else 1.0, seed=0, max_evaluations=50, random_starts=0
    )
    assert result.start_loss == 1.0
    assert result.solution.levels == (0, 0, 1)
    assert result.loss == 0.0


def test_search_stops_on_time() -> None:
    costs, budget, evaluate, _ = _instance()
    result = local_search(costs, budget, evaluate, seed=0, max_evaluations=None, max_seconds=0.2)
    assert result.stopped in {"max_seconds", "converged"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_evaluations": None, "max_seconds": None}, "so the search stops"),
        ({"max_evaluations": 0}, "max_evaluations"),
        ({"max_seconds": -1.0}, "max_seconds"),
        ({"patience": 0}, "patience"),
    ],
)
def test_search_rejects_bad_limits(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    costs, budget, evaluate, _ = _instance()
    with pytest.raises(ValueError, match=message):
        local_search(costs, budget, evaluate, **kwargs)


def test_search_rejects_non_finite_losses() -> None:
    costs, budget, _, _ = _instance()
    with pytest.raises(ValueError, match="finite loss"):
        local_search(costs, budget, lambda levels: float("nan"), max_evaluations=5)


@pytest.mark.parametrize("keep_top", [1, 3, 500])
def test_top_keeps_the_best_distinct_candidates_best_first(keep_top: int) -> None:
    costs, budget, evaluate, _ = _instance(seed=2)
    result = local_search(
        costs, budget, evaluate, seed=0, max_evaluations=40, random_starts=10, patience=5, keep_top=keep_top
    )
    top = result.top
    assert len(top) == min(keep_top, result.evaluations)
    assert top[0].levels == result.solution.levels and top[0].loss == result.loss
    assert top[0].coefficients == result.coefficients
    assert [c.loss for c in top] == sorted(c.loss for c in top)
    assert len({c.levels for c in top}) == len(top)
    worst_kept = top[-1].loss
    assert sum(1 for step in result.history if step.loss < worst_kept) <= len(top) - 1
    for candidate in top:  # the coefficients reproduce the levels through the DP
        assert candidate.loss == pytest.approx(evaluate(candidate.levels))
        errors = [
            c * curve for c, curve in zip(candidate.coefficients, spdy_prior([len(x) for x in costs]), strict=True)
        ]
        assert solve_dp(costs, errors, budget).levels == candidate.levels


def test_keep_top_must_be_positive() -> None:
    costs, budget, evaluate, _ = _instance()
    with pytest.raises(ValueError, match="keep_top"):
        local_search(costs, budget, evaluate, max_evaluations=5, keep_top=0)


def test_random_share_caps_the_random_starts_by_evaluations() -> None:
    costs, budget, evaluate, _ = _instance(seed=4)
    kwargs = {"seed": 0, "max_evaluations": 40, "random_starts": 100, "patience": 5}
    capped = local_search(costs, budget, evaluate, random_share=0.25, **kwargs)  # type: ignore[arg-type]
    uncapped = local_search(costs, budget, evaluate, **kwargs)  # type: ignore[arg-type]
    phases = [step.phase for step in capped.history]
    assert phases[0] == "start"
    assert phases.count("random") >= 1 and phases.count("random") + 1 <= 10  # a quarter of 40, start included
    assert "mutate" in phases and phases.index("mutate") > max(i for i, p in enumerate(phases) if p == "random")
    assert "mutate" not in {step.phase for step in uncapped.history}  # 100 random starts outlast 40 evaluations
    again = local_search(costs, budget, evaluate, random_share=0.25, **kwargs)  # type: ignore[arg-type]
    assert again.solution.levels == capped.solution.levels  # counted, so reproducible


def test_random_share_caps_the_random_starts_by_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    costs, budget, _, _ = _instance(seed=5)
    clock = {"now": 0.0}

    def slow(levels: tuple[int, ...]) -> float:  # every evaluation "takes" 1 s of a 10 s budget
        clock["now"] += 1.0
        return float(sum(levels))

    # the module, not the function the package exports under the same name
    monkeypatch.setattr(sys.modules["solvers.local_search"], "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    result = local_search(
        costs, budget, slow, seed=0, max_evaluations=None, max_seconds=10.0, random_share=0.3, patience=50
    )
    phases = [step.phase for step in result.history]
    assert phases.count("random") <= 3 and "mutate" in phases


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5, float("nan")])
def test_random_share_must_be_a_share(share: float) -> None:
    costs, budget, evaluate, _ = _instance()
    with pytest.raises(ValueError, match="random_share"):
        local_search(costs, budget, evaluate, max_evaluations=5, random_share=share)
