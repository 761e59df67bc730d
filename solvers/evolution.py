"""Evolutionary search over per-unit levels under a latency budget, with multi-step selection.

A (1 + lambda) evolution in the manner of EvoPress, budgeted in predicted *latency* instead of
parameters. Every generation makes ``selection[0]`` offspring of the current parent; each offspring is
feasible before it is scored:

- ``space="levels"``: 1-``max_swaps`` level swaps (one unit a level more compressed, another a level
  less), then ``repair_levels`` brings the vector to the budget with the table (other units move,
  guided by the per-unit error curves);
- ``space="coefficients"``: 1-``max_swaps`` of SPDY's per-unit error weights are resampled and the DP
  turns them into levels (parents without weights, e.g. the uniform seed, mutate as levels).
- ``space="mixed"``: each offspring picks one of the two at random.

Multi-step selection: the offspring are scored on the first (smallest) sample, the best
``selection[1]`` of them re-scored on the second, and so on; the last step's sample is the largest.
The best candidate of the last step replaces the parent only if its loss there is strictly lower
(so the result is never worse than the best seed on that sample). The caller maps a step to its
sample: ``evaluate(levels, step)``; results are cached per (levels, step).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers._validation import BUDGET_SLACK_MS, FloatArrays, as_cost_arrays, check_budget
from solvers.dp import solve_dp
from solvers.error_models import error_curves, scaled_errors
from solvers.local_search import Candidate
from solvers.repair import plan_cost, repair_levels
from solvers.result import Solution

StagedEvaluator = Callable[[tuple[int, ...], int], float]
"""``evaluate(levels, step) -> loss`` on the sample of selection step ``step`` (0 = smallest)."""

BatchEvaluator = Callable[[Sequence[tuple[int, ...]], int], Sequence[float]]
"""``evaluate_many(levels_list, step) -> losses`` in the same order (e.g. spread over workers)."""

SPACES = ("levels", "coefficients", "mixed")

DEFAULT_SELECTION = (16, 4, 1)
"""Offspring per generation, then survivors re-scored at each later step (EvoPress's fast setting
is 16 offspring over two steps; the middle step lets a 64-example final sample cost ~2x a 16-example
screen instead of 16x)."""


@dataclass(frozen=True)
class Seed:
    """A starting point: its levels, the SPDY weights that produced it (if any), and where it came from."""

    levels: tuple[int, ...]
    coefficients: tuple[float, ...] | None
    source: str


@dataclass(frozen=True)
class Generation:
    """One generation of the evolution.

    Attributes:
        generation: 1-based generation number.
        evaluations: ``evaluate`` calls so far (all steps).
        step_best: best loss at each selection step in this generation (step 0 first).
        parent_loss: the parent's loss on the last step after this generation.
        improved: whether an offspring replaced the parent.
        seconds: wall time since the search started (s).
    """

    generation: int
    evaluations: int
    step_best: tuple[float, ...]
    parent_loss: float
    improved: bool
    seconds: float


@dataclass(frozen=True)
class EvolutionResult:
    """The best candidate on the last step's sample, the seeds' losses, and the history.

    ``top`` holds the best distinct candidates scored on the last step, best first (``top[0]`` is the
    result); a caller re-ranks them on data the search never scored.
    """

    solution: Solution
    loss: float
    seed_losses: tuple[tuple[str, float], ...]
    history: tuple[Generation, ...]
    evaluations: int
    generations: int
    stopped: str
    top: tuple[Candidate, ...]


@dataclass
class _Individual:
    levels: tuple[int, ...]
    coefficients: NDArray[np.float64] | None
    source: str


def _check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    if value is None:
        return
    bad = not np.isfinite(value) or value <= 0 or (integer and int(value) != value)
    if bad:
        kind = "an integer >= 1" if integer else "> 0"
        raise ValueError(f"The '{name}' parameter must be {kind} or None. Got {value!r} instead.")


def _check_selection(selection: Sequence[int]) -> tuple[int, ...]:
    steps = tuple(int(s) for s in selection)
    if not steps or any(s < 1 for s in steps) or any(b > a for a, b in itertools.pairwise(steps)):
        raise ValueError(
            "The 'selection' parameter must be a non-increasing list of counts >= 1, offspring first "
            f"(e.g. (16, 4, 1)). Got {tuple(selection)!r} instead."
        )
    return steps


class _Mutator:
    """Makes feasible offspring of a parent (see the module docstring)."""

    def __init__(
        self,
        costs: FloatArrays,
        curves: FloatArrays,
        budget: float,
        rng: np.random.Generator,
        *,
        space: str,
        max_swaps: int,
    ) -> None:
        self.costs, self.curves, self.budget, self.rng = costs, curves, budget, rng
        self.space, self.max_swaps = space, max_swaps
        self.sizes = np.array([c.size for c in costs])

    def swaps(self) -> int:
        """min(U(1, m), U(1, m)): mostly one swap, sometimes more (EvoPress)."""
        return int(min(self.rng.integers(1, self.max_swaps + 1), self.rng.integers(1, self.max_swaps + 1)))

    def by_levels(self, parent: _Individual) -> _Individual:
        levels = list(parent.levels)
        touched: set[int] = set()
        for _ in range(self.swaps()):
            up = np.flatnonzero(np.asarray(levels) < self.sizes - 1)
            down = np.flatnonzero(np.asarray(levels) > 0)
            if up.size == 0 or down.size == 0:
                break
            a = int(self.rng.choice(up))
            down = down[down != a]
            if down.size == 0:
                break
            b = int(self.rng.choice(down))
            # Mostly one level, sometimes more: two-level moves escape optima that single steps cannot.
            step = int(self.rng.geometric(0.5))
            levels[a] = min(levels[a] + step, int(self.sizes[a]) - 1)
            levels[b] = max(levels[b] - step, 0)
            touched |= {a, b}
        repaired = repair_levels(self.costs, self.curves, self.budget, levels, frozen=touched)
        return _Individual(repaired, None, "levels")

    def by_coefficients(self, parent: _Individual) -> _Individual:
        assert parent.coefficients is not None
        coeffs = parent.coefficients.copy()
        k = min(self.swaps(), coeffs.size)
        picked = self.rng.choice(coeffs.size, size=k, replace=False)
        coeffs[picked] = self.rng.uniform(size=k)
        levels = solve_dp(self.costs, scaled_errors(coeffs, self.curves), self.budget).levels
        return _Individual(levels, coeffs, "coefficients")

    def __call__(self, parent: _Individual) -> _Individual:
        use_coefficients = parent.coefficients is not None and (
            self.space == "coefficients" or (self.space == "mixed" and self.rng.uniform() < 0.5)
        )
        return self.by_coefficients(parent) if use_coefficients else self.by_levels(parent)


def evolutionary_search(
    costs_ms: Sequence[ArrayLike],
    budget_ms: float,
    evaluate: StagedEvaluator,
    seeds: Sequence[Seed],
    *,
    curves: Sequence[ArrayLike] | None = None,
    selection: Sequence[int] = DEFAULT_SELECTION,
    space: str = "levels",
    max_swaps: int = 3,
    seed: int = 0,
    max_generations: int | None = None,
    max_evaluations: int | None = None,
    max_seconds: float | None = None,
    patience: int | None = None,
    keep_top: int = 5,
    on_generation: Callable[[Generation], None] | None = None,
    evaluate_many: BatchEvaluator | None = None,
    parallel: int = 1,
) -> EvolutionResult:
    """Search levels that minimise ``evaluate(levels, last step)`` within ``budget_ms``.

    Args:
        costs_ms: per unit, 1-D array of level latencies (ms); level 0 is the dense level.
        budget_ms: latency budget of the searched units (ms); every evaluated candidate meets it.
        evaluate: (levels, step) -> finite loss on step ``step``'s sample; step ``len(selection) - 1``
            is the largest sample, on which the parent and the result are judged.
        seeds: starting points (each within the budget), e.g. the DP plan, the uniform allocation,
            the SPDY search's best; all are scored on every step and the best becomes the parent.
        curves: per unit error guide for the repair and the DP (default: SPDY's prior).
        selection: candidates scored at each step, offspring first (non-increasing, >= 1).
        space: "levels", "coefficients" or "mixed" (see the module docstring).
        max_swaps: most level swaps / weights resampled per offspring (>= 1).
        seed: seeds the mutations; the same seed and a deterministic ``evaluate`` give the same result.
        max_generations / max_evaluations / max_seconds: stop at whichever comes first (at least one);
            the seeds are always scored, a generation cut short is discarded.
        patience: stop after this many generations without an improvement (None: never).
        keep_top: how many of the best distinct last-step candidates ``top`` keeps (>= 1).
        on_generation: called after every generation (progress bars).
        evaluate_many: scores several candidates of one step at once (a pool of workers); None: one
            ``evaluate`` call each. Results must equal ``evaluate``'s: the trajectory never depends on it.
        parallel: candidates handed to ``evaluate_many`` at a time (the time limit is checked between
            such batches, so a cut-short generation is discarded the same way).

    Returns:
        ``EvolutionResult``; its loss is <= every seed's loss on the last step.
    """
    costs = as_cost_arrays(costs_ms)
    budget = check_budget(budget_ms)
    steps = _check_selection(selection)
    if space not in SPACES:
        raise ValueError(f"The 'space' parameter must be one of {', '.join(SPACES)}. Got {space!r} instead.")
    for name, value in (("max_generations", max_generations), ("max_evaluations", max_evaluations)):
        _check_positive(name, value, integer=True)
    _check_positive("patience", patience, integer=True)
    _check_positive("max_seconds", max_seconds)
    _check_positive("max_swaps", max_swaps, integer=True)
    _check_positive("keep_top", keep_top, integer=True)
    _check_positive("parallel", parallel, integer=True)
    if max_generations is None and max_evaluations is None and max_seconds is None and patience is None:
        raise ValueError("Set 'max_generations', 'max_evaluations', 'max_seconds' or 'patience' so the search stops.")
    if not seeds:
        raise ValueError("evolutionary_search needs at least one seed (e.g. the DP plan).")
    guide = error_curves(curves, costs)
    for s in seeds:
        if len(s.levels) != len(costs) or any(not 0 <= k < c.size for k, c in zip(s.levels, costs, strict=True)):
            raise ValueError(f"seed {s.source!r} must give one valid level index per unit ({len(costs)} units).")
        if plan_cost(costs, s.levels) > budget + BUDGET_SLACK_MS:
            raise ValueError(
                f"seed {s.source!r} costs {plan_cost(costs, s.levels):.4g} ms, over the budget of {budget:.4g} ms; "
                "seeds must be feasible (repair them with solvers.repair_levels)."
            )

    rng = np.random.default_rng(seed)
    mutate = _Mutator(costs, guide, budget, rng, space=space, max_swaps=int(max_swaps))
    started = time.perf_counter()
    last = len(steps) - 1
    scored: dict[tuple[tuple[int, ...], int], float] = {}
    final: dict[tuple[int, ...], Candidate] = {}

    def remember(ind: _Individual, step: int, loss: float) -> None:
        if not np.isfinite(loss):
            raise ValueError(f"evaluate() returned {loss} for levels {ind.levels}; it must return a finite loss.")
        scored[(ind.levels, step)] = loss
        if step == last and ind.levels not in final:
            coeffs = () if ind.coefficients is None else tuple(float(c) for c in ind.coefficients)
            final[ind.levels] = Candidate(ind.levels, coeffs, loss, ind.source)

    def score_all(inds: Sequence[_Individual], step: int) -> list[float]:
        """Losses of ``inds`` on ``step``'s sample; each distinct level vector is evaluated once."""
        todo: dict[tuple[int, ...], _Individual] = {}
        for ind in inds:
            if (ind.levels, step) not in scored:
                todo.setdefault(ind.levels, ind)
        if todo and evaluate_many is not None:
            losses = [float(x) for x in evaluate_many(list(todo), step)]
            if len(losses) != len(todo):
                raise ValueError(f"evaluate_many() returned {len(losses)} losses for {len(todo)} candidates.")
        else:
            losses = [float(evaluate(levels, step)) for levels in todo]
        for ind, loss in zip(todo.values(), losses, strict=True):
            remember(ind, step, loss)
        return [scored[(ind.levels, step)] for ind in inds]

    def score(ind: _Individual, step: int) -> float:
        return score_all([ind], step)[0]

    def out_of_budget(generation: int) -> str | None:
        if max_generations is not None and generation >= max_generations:
            return "max_generations"
        if max_evaluations is not None and len(scored) >= max_evaluations:
            return "max_evaluations"
        if max_seconds is not None and time.perf_counter() - started >= max_seconds:
            return "max_seconds"
        return None

    population = [
        _Individual(s.levels, None if s.coefficients is None else np.asarray(s.coefficients, float), s.source)
        for s in seeds
    ]
    seed_losses = tuple(zip((ind.source for ind in population), score_all(population, last), strict=True))
    parent = population[int(np.argmin([loss for _, loss in seed_losses]))]
    parent_loss = score(parent, last)
    history: list[Generation] = []
    generation, idle = 0, 0
    stopped = out_of_budget(generation)
    while stopped is None:
        offspring: list[_Individual] = []
        seen = {parent.levels}
        for _ in range(20 * steps[0]):  # duplicates are redrawn; tiny problems may run out of new children
            if len(offspring) == steps[0]:
                break
            child = mutate(parent)
            if child.levels not in seen:
                seen.add(child.levels)
                offspring.append(child)
        if not offspring:
            stopped = "exhausted"
            break
        survivors, step_best = offspring, []
        cut_short = False
        for step, keep in enumerate(steps):
            survivors = survivors[:keep]
            losses: list[float] = []
            for first in range(0, len(survivors), int(parallel)):
                losses += score_all(survivors[first : first + int(parallel)], step)
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    cut_short = True
                    break
            if cut_short:
                break
            order = np.argsort(losses, kind="stable")
            survivors = [survivors[i] for i in order]
            step_best.append(float(losses[order[0]]))
        if cut_short:
            stopped = "max_seconds"
            break
        generation += 1
        winner = survivors[0]
        improved = score(winner, last) < parent_loss
        if improved:
            parent, parent_loss, idle = winner, score(winner, last), 0
        else:
            idle += 1
        record = Generation(
            generation, len(scored), tuple(step_best), parent_loss, improved, time.perf_counter() - started
        )
        history.append(record)
        if on_generation is not None:
            on_generation(record)
        stopped = out_of_budget(generation)
        if stopped is None and patience is not None and idle >= patience:
            stopped = "no_improvement"

    best_levels = parent.levels
    error = float(sum(g[k] for g, k in zip(guide, best_levels, strict=True)))
    return EvolutionResult(
        solution=Solution(best_levels, plan_cost(costs, best_levels), error, "evolution"),
        loss=parent_loss,
        seed_losses=seed_losses,
        history=tuple(history),
        evaluations=len(scored),
        generations=generation,
        stopped=str(stopped),
        top=tuple(sorted(final.values(), key=lambda c: c.loss)[:keep_top]),
    )
