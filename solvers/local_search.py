"""SPDY's local search over per-unit error coefficients.

The DP needs an error per unit and level; SPDY parameterises it as ``e[l] = c_l * curve_l`` and
searches the coefficients ``c`` against a real loss: each candidate ``c`` is turned into levels by
the DP, the model is built at those levels and its calibration loss measured (the ``evaluate``
callback). Identical level choices are evaluated once.

Call order: random starts (after the all-ones start, which is the plain DP), then mutation of k
random coordinates of the best ``c``, k shrinking from round(0.1 L) to 1 after ``patience``
candidates without a strict improvement. ``random_share`` caps the random starts at a share of the
budget (of ``max_evaluations``, or of ``max_seconds`` by the clock), so that a search that can afford
few evaluations still mutates its best: with measured error curves the all-ones start is a strong
prior that a random start seldom beats (SmolLM2: 12 evaluations in 30 s, all random, none better).

Batches (``batch`` > 1, for a pool of workers): each round proposes ``batch`` candidates before any
of them is scored, then takes their results in proposal order. Random starts are the same vectors as
one at a time; a round's mutations all start from the best ``c`` at the round's start, so an
improvement found mid-round is mutated only from the next round on (with ``batch=1`` the search is
the sequential one). The trajectory depends on ``batch``, never on how many workers score a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers._validation import as_cost_arrays, check_buckets, check_budget
from solvers.dp import DEFAULT_BUCKETS, solve_dp
from solvers.error_models import error_curves, scaled_errors
from solvers.result import Solution

Evaluator = Callable[[tuple[int, ...]], float]
BatchEvaluator = Callable[[Sequence[tuple[int, ...]]], Sequence[float]]
"""``evaluate_many(levels_list) -> losses`` in the same order (e.g. spread over workers)."""


@dataclass(frozen=True)
class SearchStep:
    """One real evaluation of the callback.

    Attributes:
        evaluation: 1-based count of real evaluations so far.
        phase: "start" (all-ones coefficients, the plain DP), "random" or "mutate".
        loss: the callback's loss for this candidate's levels.
        best_loss: best loss seen up to and including this step.
        seconds: wall time since the search started (s).
        mutated: number of coordinates resampled (0 for start and random phases).
    """

    evaluation: int
    phase: str
    loss: float
    best_loss: float
    seconds: float
    mutated: int


@dataclass(frozen=True)
class Candidate:
    """One evaluated level choice: its levels, the coefficients that first produced it, its loss."""

    levels: tuple[int, ...]
    coefficients: tuple[float, ...]
    loss: float
    phase: str


@dataclass(frozen=True)
class SearchResult:
    """Best plan found, how it was found, and the full history for plots.

    ``top`` holds the best ``keep_top`` distinct candidates, best first (``top[0]`` is the result):
    a caller can re-rank them on more data, since the best loss on a small sample is optimistic.
    """

    solution: Solution
    coefficients: tuple[float, ...]
    loss: float
    start_loss: float
    history: tuple[SearchStep, ...]
    evaluations: int
    candidates: int
    stopped: str
    top: tuple[Candidate, ...] = ()


@dataclass
class _Incumbent:
    """The best candidate so far (mutable, private to one search)."""

    loss: float = float("inf")
    coeffs: NDArray[np.float64] | None = None
    solution: Solution | None = None


def _check_limit(name: str, value: float | None) -> None:
    if value is not None and (not np.isfinite(value) or value <= 0):
        raise ValueError(f"The '{name}' parameter must be > 0 or None. Got {value!r} instead.")


def local_search(
    costs_ms: Sequence[ArrayLike],
    budget_ms: float,
    evaluate: Evaluator,
    *,
    curves: Sequence[ArrayLike] | None = None,
    seed: int = 0,
    max_evaluations: int | None = 1_000,
    max_seconds: float | None = None,
    random_starts: int = 100,
    random_share: float | None = None,
    patience: int = 100,
    buckets: int = DEFAULT_BUCKETS,
    on_step: Callable[[SearchStep], None] | None = None,
    keep_top: int = 5,
    batch: int = 1,
    evaluate_many: BatchEvaluator | None = None,
) -> SearchResult:
    """Search per-unit coefficients ``c`` in [0, 1] that minimise ``evaluate(levels)``.

    Args:
        costs_ms: per unit, 1-D array of level latencies (ms).
        budget_ms: latency budget for the searched units (ms); every candidate meets it.
        evaluate: levels (one index per unit) -> loss; called once per distinct level choice.
        curves: per unit error curve over levels (default: SPDY's prior ``(i/(n-1))**2``); a
            backend's measured errors can be passed after ``normalised_curves``.
        seed: seeds the coefficient sampling; the same seed and callback give the same result.
        max_evaluations / max_seconds: stop at whichever comes first (None = no limit; at least one
            must be set).
        random_starts: random coefficient vectors tried after the all-ones start, at most.
        random_share: the random starts end once they have used this share of the budget: of
            ``max_evaluations`` (counted, so reproducible) and of ``max_seconds`` (by the clock), in
            (0, 1]; None: only ``random_starts`` ends them.
        patience: candidates without a strict improvement before k is lowered by one.
        buckets: DP budget buckets.
        on_step: called after every real evaluation (e.g. to drive a progress bar).
        keep_top: how many of the best distinct candidates ``SearchResult.top`` keeps (>= 1).
        batch: candidates proposed per round (see the module docstring).
        evaluate_many: scores a round's new level choices at once; None: one ``evaluate`` call each.
            Results must equal ``evaluate``'s.

    Returns:
        ``SearchResult`` with the best (never the last) candidate; its loss is <= the start's.
    """
    costs = as_cost_arrays(costs_ms)
    budget = check_budget(budget_ms)
    check_buckets(buckets)
    _check_limit("max_seconds", max_seconds)
    if max_evaluations is not None and max_evaluations < 1:
        raise ValueError(f"The 'max_evaluations' parameter must be >= 1 or None. Got {max_evaluations!r} instead.")
    if max_evaluations is None and max_seconds is None:
        raise ValueError("Set 'max_evaluations' or 'max_seconds' (or both) so the search stops.")
    if keep_top < 1:
        raise ValueError(f"The 'keep_top' parameter must be >= 1. Got {keep_top!r} instead.")
    if batch < 1:
        raise ValueError(f"The 'batch' parameter must be >= 1. Got {batch!r} instead.")
    if random_share is not None and not 0.0 < random_share <= 1.0:
        raise ValueError(f"The 'random_share' parameter must be in (0, 1] or None. Got {random_share!r} instead.")
    if random_starts < 0 or patience < 1:
        raise ValueError(f"'random_starts' must be >= 0 and 'patience' >= 1; got {random_starts} and {patience}.")
    unit_curves = error_curves(curves, costs)

    n_units = len(costs)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    cache: dict[tuple[int, ...], Candidate] = {}  # every distinct level choice evaluated so far
    history: list[SearchStep] = []
    candidates = 0
    best = _Incumbent()

    def out_of_budget(share: float = 1.0) -> str | None:
        """Why ``share`` of the budget is spent (None: it is not)."""
        if max_evaluations is not None and len(cache) >= share * max_evaluations:
            return "max_evaluations"
        if max_seconds is not None and time.perf_counter() - started >= share * max_seconds:
            return "max_seconds"
        return None

    def try_round(proposals: list[NDArray[np.float64]], phase: str, mutated: int) -> list[bool]:
        """Solve and evaluate a round of coefficient vectors; per proposal, whether it strictly improved
        on the best so far (taken in proposal order)."""
        nonlocal candidates
        solutions = [solve_dp(costs, scaled_errors(c, unit_curves), budget, buckets=buckets) for c in proposals]
        fresh: dict[tuple[int, ...], NDArray[np.float64]] = {}
        for coeffs, solution in zip(proposals, solutions, strict=True):
            if solution.levels not in cache:
                fresh.setdefault(solution.levels, coeffs)
        if max_evaluations is not None:  # never more real evaluations than allowed
            fresh = dict(list(fresh.items())[: max(0, max_evaluations - len(cache))])
        keys = list(fresh)
        if keys and evaluate_many is not None:
            losses = [float(x) for x in evaluate_many(keys)]
            if len(losses) != len(keys):
                raise ValueError(f"evaluate_many() returned {len(losses)} losses for {len(keys)} candidates.")
        else:
            losses = [float(evaluate(key)) for key in keys]
        new_losses = dict(zip(keys, losses, strict=True))
        improved = []
        for coeffs, solution in zip(proposals, solutions, strict=True):
            key = solution.levels
            if key in new_losses and key not in cache:
                loss = new_losses[key]
                if not np.isfinite(loss):
                    raise ValueError(f"evaluate() returned {loss} for levels {key}; it must return a finite loss.")
                cache[key] = Candidate(key, tuple(float(c) for c in coeffs), loss, phase)
                step = SearchStep(len(cache), phase, loss, min(loss, best.loss), time.perf_counter() - started, mutated)
                history.append(step)
                if on_step is not None:
                    on_step(step)
            elif key not in cache:
                break  # past max_evaluations: the rest of the round is not taken
            candidates += 1
            loss = cache[key].loss
            better = loss < best.loss
            if better:
                best.loss, best.coeffs, best.solution = loss, coeffs.copy(), solution
            improved.append(better)
        return improved

    try_round([np.ones(n_units)], "start", 0)
    start_loss = best.loss
    stopped = out_of_budget()
    remaining = random_starts
    while remaining > 0 and not stopped and not (random_share is not None and out_of_budget(random_share)):
        size = min(batch, remaining)
        if random_share is not None and max_evaluations is not None:  # never past the share mid-round
            size = min(size, max(1, int(np.ceil(random_share * max_evaluations)) - len(cache)))
        try_round([rng.uniform(size=n_units) for _ in range(size)], "random", 0)
        remaining -= size
        stopped = out_of_budget()

    k = max(1, round(0.1 * n_units))
    misses = 0
    # Without a cap, a search whose candidates all hit the cache would never stop on evaluations.
    max_candidates = None if max_evaluations is None else 50 * max_evaluations + 10 * patience
    while not stopped:
        assert best.coeffs is not None  # set by the start candidate
        proposals = []
        for _ in range(batch):
            coeffs = best.coeffs.copy()
            picked = rng.choice(n_units, size=k, replace=False)
            coeffs[picked] = rng.uniform(size=k)
            proposals.append(coeffs)
        round_k = k
        for better in try_round(proposals, "mutate", round_k):
            if better:
                misses = 0
                continue
            misses += 1
            if misses >= patience:
                if k == 1:
                    stopped = "converged"
                    break
                k -= 1
                misses = 0
        if stopped:
            break
        stopped = out_of_budget()
        if not stopped and max_candidates is not None and candidates >= max_candidates:
            stopped = "max_candidates"

    assert best.solution is not None and best.coeffs is not None
    solution = best.solution
    return SearchResult(
        solution=Solution(solution.levels, solution.cost_ms, solution.error, "dp+search"),
        coefficients=tuple(float(c) for c in best.coeffs),
        loss=best.loss,
        start_loss=start_loss,
        history=tuple(history),
        evaluations=len(cache),
        candidates=candidates,
        stopped=str(stopped),
        top=tuple(sorted(cache.values(), key=lambda c: c.loss)[:keep_top]),
    )
