"""The search stage: per-unit levels chosen by evaluating whole shrunk models, then a final pick on
calibration examples the search never scored.

Two searches, both feasible by construction (every candidate's table-predicted latency fits the budget):

- ``evolution``: a (1 + lambda) evolution over level vectors, each offspring repaired to the
  budget with the table, seeded with the plain DP plan and the uniform allocation (and any extra
  seeds, e.g. an SPDY search's best); offspring are screened on a small prefix of the search
  examples and the survivors re-scored on larger ones (``EVOLUTION_SAMPLES``);
- ``spdy`` (what ``auto`` runs: it measured better at equal time, see ``planner.config.DEFAULT_SEARCH``):
  SPDY's local search over per-unit error weights, every candidate made by the DP.

The search scores candidates on the first ``examples`` calibration examples. Its best few plans, the
plain DP plan and the uniform allocation for the same budget are then re-ranked on the remaining
calibration examples (``selection``); the lowest loss there is the plan, unless it does not beat
uniform with paired confidence (then uniform is kept).

Candidates are built the ways the backend's recipes will fill the plan's units
(``planner.stages.search.scoring``): the search runs under the scoring its seeds scored lowest under,
and the final pick scores each contender under every scoring and keeps its best, as the apply will.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import solvers
from planner.backends.base import Backend
from planner.config import SearchSettings
from planner.errors import PlannerError
from planner.records.error_table import ErrorTable
from planner.records.report import Contender as ReportContender
from planner.records.report import SearchSummary, SelectionSummary
from planner.stages.search.pool import CandidatePool, LocalPool, describe
from planner.stages.search.samples import SEARCH, SELECTION, SampleLosses, screen
from planner.stages.search.scoring import scoring_names
from planner.stages.search.selection import Contender, Selection, select_plan
from planner.tasks.base import Task
from profilers import LatencyTable
from profilers.profiler import progress_bar

EVOLUTION_SAMPLES = (0.125, 0.375, 1.0)
"""Fractions of the search examples scored at each selection step (offspring, survivors, winner)."""

EVOLUTION_SELECTION = (16, 4, 1)
"""Candidates scored at each step: 16 offspring screened, the best 4 re-scored, the best 1 judged."""

EVOLUTION_PATIENCE = 50
"""Generations without an improvement after which the evolution stops."""

EVOLUTION_SPACE = "levels"
"""What the evolution mutates: "levels" (swaps, repaired to the budget), "coefficients" (SPDY's
weights, the DP makes the levels) or "mixed" (see ``solvers.evolution``)."""

SPDY_RANDOM_SHARE = 0.5
"""Share of SPDY's budget its random starts may use before it mutates its best plan (see
``solvers.local_search``). A 30 s SmolLM2 search affords about 12 evaluations on two cores: all random
starts, none beat the DP plan; with half of them mutating, 3 of 3 searches moved and the chosen plan's
held-out KL fell by 0.046 (``benchmarks/search_bench.py``, ``benchmarks/RESULTS.md`` 2026-12-07)."""


@dataclass(frozen=True)
class Recipe:
    """How a chosen plan is re-planned for another budget (a correction after measuring).

    ``coefficients``: the SPDY search's per-unit weights of the backend's errors (the DP re-plans);
    ``anchor``: the evolution's levels, repaired to the new budget with the table; neither: the
    uniform allocation.
    """

    coefficients: tuple[float, ...] | None
    anchor: tuple[int, ...] | None = None

    @property
    def uniform(self) -> bool:
        return self.coefficients is None and self.anchor is None

    @property
    def label(self) -> str:
        if self.anchor is not None:
            return "evolution"
        return "dp+search" if self.coefficients is not None else "dp+search:uniform"

    def levels(self, table: LatencyTable, scores: ErrorTable, budget_ms: float, units: Any) -> list[int]:
        """Levels for ``budget_ms`` following this recipe."""
        costs = table.unit_costs()
        errors = scores.unit_errors()
        if self.anchor is not None:
            costs_f = [np.asarray(c, dtype=np.float64) for c in costs]
            errors_f = [np.asarray(e, dtype=np.float64) for e in errors]
            return list(solvers.repair_levels(costs_f, errors_f, budget_ms, self.anchor))
        if self.coefficients is None:
            fractions = [u.compression() for u in units]
            return list(solvers.solve_uniform(costs, errors, budget_ms, fractions=fractions).levels)
        return list(solvers.solve_dp(costs, solvers.scaled_errors(self.coefficients, errors), budget_ms).levels)


@dataclass(frozen=True)
class SearchOutcome:
    """What the search chose and why: its result (history), the final pick, the recipe, and the cost.

    ``cost``: evaluations, examples scored, and seconds spent building candidates vs forward passes.
    """

    levels: tuple[int, ...]
    recipe: Recipe
    result: solvers.SearchResult | solvers.EvolutionResult
    selection: Selection
    method: str
    seconds: float
    cost: dict[str, float]
    executor: dict[str, float | str] | None = None
    """Where the candidates were evaluated: kind, workers, evaluations, evaluations/s, retried."""
    scoring: str | None = None
    """The scoring the search ran under (``planner.stages.search.scoring``)."""
    seed_losses: dict[str, float] | None = None
    """scoring -> the lowest loss of the seeds (plain DP plan, uniform) under it on the search sample;
    None when the backend has one scoring."""

    @property
    def start_loss(self) -> float:
        """The loss the search started from: the plain DP plan (SPDY) or the best seed (evolution)."""
        if isinstance(self.result, solvers.EvolutionResult):
            return min(loss for _, loss in self.result.seed_losses)
        return self.result.start_loss

    @property
    def generations(self) -> int | None:
        return self.result.generations if isinstance(self.result, solvers.EvolutionResult) else None

    def text(self) -> str:
        """One line for the log: the scoring the search ran under, its evaluations and how far it moved
        from its start, and the final pick with every contender's held-out loss (and, with several
        scorings, the way it was scored)."""
        said = f"searched as {self.scoring}" if self.scoring else "searched"
        if self.seed_losses:
            said += " (the seeds' lowest loss: " + ", ".join(f"{n} {v:.4g}" for n, v in self.seed_losses.items()) + ")"
        # Whether the search moved from where it started: a best equal to the start is its prior.
        said += (
            f"; {self.result.evaluations} evaluations in {self.cost.get('search_seconds', self.seconds):.0f} s,"
            f" best {self.result.loss:.4g} from {self.start_loss:.4g} on the search sample"
        )
        pick = self.selection
        each = ", ".join(
            f"{c.source} {c.loss:.4g}" + (f" as {c.scoring}" if self.seed_losses and c.scoring else "")
            for c in pick.contenders
        )
        said += f"; final pick {pick.chosen.source} ({each})"
        return said + ("; uniform kept, not beaten with confidence" if pick.kept_uniform else "")

    def summary(self) -> SearchSummary:
        """The report's record of this search (``planner.records.report.SearchSummary``)."""
        pick = self.selection
        selection = SelectionSummary(
            pick.chosen.source,
            pick.examples,
            tuple(ReportContender(c.source, c.search_loss, c.loss, c.scoring) for c in pick.contenders),
            pick.as_dict().get("versus_uniform"),
        )
        return SearchSummary(
            self.method,
            self.result.evaluations,
            self.start_loss,
            self.result.loss,
            self.result.stopped,
            self.seconds,
            selection,
            generations=self.generations,
            cost=dict(self.cost),
            executor=None if self.executor is None else dict(self.executor),
            scoring=None if self.scoring is None else {"chosen": self.scoring, "seed_losses": self.seed_losses},
        )


def split_examples(count: int, search_examples: int) -> tuple[list[int], list[int]]:
    """(search indices, selection indices) of ``count`` calibration examples: the first
    ``search_examples`` for the search, the rest for the final pick (all of them when none are left)."""
    used = min(search_examples, count)
    held_out = list(range(used, count)) or list(range(count))
    return list(range(used)), held_out


def apart_from_pick(calibration: int, pick_examples: int) -> str | None:
    """The search sample's name when it is apart from the final pick's ``pick_examples`` of ``calibration``
    examples (``split_examples`` gives the pick every example when none are left), else None: the pick
    adds it to its paired test of priors (``planner.stages.search.selection``) only when apart."""
    return SEARCH if pick_examples < calibration else None


def sample_sizes(examples: int, fractions: Sequence[float] = EVOLUTION_SAMPLES) -> tuple[int, ...]:
    """Examples scored at each selection step: growing prefixes of the ``examples`` search examples.

    Raises:
        PlannerError: when the search examples are too few for strictly growing samples.
    """

    def sizes_for(n: int) -> tuple[int, ...]:
        return tuple(max(1, round(n * f)) for f in fractions)

    def growing(sizes: tuple[int, ...]) -> bool:
        return all(b > a for a, b in itertools.pairwise(sizes))

    sizes = sizes_for(examples)
    if not growing(sizes):
        need = next(n for n in range(examples + 1, 10_000) if growing(sizes_for(n)))
        raise PlannerError(
            f"--search evolution scores {len(fractions)} growing samples of the search examples, but only "
            f"{examples} are available; give at least {need} (--search-examples, or a larger --calibration-size)."
        )
    return sizes


def search_samples(settings: SearchSettings, calibration: int) -> dict[str, tuple[int, ...]]:
    """The calibration samples a search scores on, by name: the search sample, the evolution's
    screening prefixes of it, and the final pick's held-out examples (``split_examples``)."""
    search_index, selection_index = split_examples(calibration, settings.examples)
    samples = {SEARCH: tuple(search_index), SELECTION: tuple(selection_index)}
    if settings.method == "evolution":
        for step, n in enumerate(sample_sizes(settings.examples)[:-1]):
            samples[screen(step)] = tuple(search_index[:n])
    return samples


def check_search(settings: SearchSettings, calibration: int) -> None:
    """Refuse search settings the calibration set cannot serve (before any work)."""
    if settings.method == "evolution":
        sample_sizes(settings.examples)
        if calibration <= settings.examples:
            raise PlannerError(
                f"--search evolution keeps calibration examples apart for the final pick, but all {calibration} "
                f"are search examples; lower --search-examples below {calibration} or raise --calibration-size."
            )


def plain_dp(table: LatencyTable, scores: ErrorTable, budget_ms: float, units: Any) -> tuple[int, ...]:
    """The plain DP plan (every unit's error weight 1): the searches' prior."""
    return tuple(Recipe((1.0,) * len(table.unit_costs())).levels(table, scores, budget_ms, units))


def _seeds(
    table: LatencyTable, scores: ErrorTable, budget_ms: float, units: Any, extra: Sequence[solvers.Seed]
) -> list[solvers.Seed]:
    """The plain DP plan, the uniform allocation (when it fits), then ``extra``."""
    ones = (1.0,) * len(table.unit_costs())
    seeds = [solvers.Seed(plain_dp(table, scores, budget_ms, units), ones, "dp")]
    # Non-monotone costs: even the most compressed uniform plan can miss a budget the DP meets.
    with contextlib.suppress(solvers.InfeasibleBudgetError):
        seeds.append(solvers.Seed(tuple(Recipe(None).levels(table, scores, budget_ms, units)), None, "uniform"))
    return seeds + list(extra)


def search_levels(
    *,
    adapter: Any,
    task: Task,
    table: LatencyTable,
    scores: ErrorTable,
    backend: Backend,
    budget_ms: float,
    settings: SearchSettings,
    progress: bool = False,
    seeds: Sequence[solvers.Seed] = (),
    quality: Callable[[Any], bool] | None = None,
    pool: CandidatePool | None = None,
) -> SearchOutcome:
    """Search levels for ``budget_ms`` (see the module docstring); ``settings.seconds`` bounds the search.

    Args:
        seeds: extra starting points for the evolution (e.g. an SPDY search's best levels).
        quality: ``model -> within --max-loss`` on the final pick's examples (``split_examples``);
            contenders outside it are not chosen while another is within.
        pool: where candidates are evaluated (``planner.executors``), holding ``search_samples``;
            None: this process.
    """
    start = time.perf_counter()
    check_search(settings, len(task.calibration))
    samples = search_samples(settings, len(task.calibration))
    local = pool.samples if isinstance(pool, LocalPool) else None
    if pool is None:
        local = SampleLosses(
            adapter=adapter, task=task, backend=backend, scores=scores, samples=samples, objective=settings.objective
        )
        pool = LocalPool(local)
    evaluations_before, examples_before = pool.stats.evaluations, pool.stats.examples
    units = adapter.units()
    costs, errors = table.unit_costs(), scores.unit_errors()
    scorings = scoring_names(adapter, backend)
    scoring, seed_losses = choose_scoring(
        pool, scorings, [s.levels for s in _seeds(table, scores, budget_ms, units, ())]
    )

    def losses(candidates: Sequence[tuple[int, ...]], sample: str) -> list[float]:
        return [float(np.mean(x)) for x in pool.losses([(tuple(c), sample, scoring) for c in candidates])]

    batch = settings.batch or pool.workers
    total = round(settings.seconds) if settings.seconds is not None else None
    label = f"search ({settings.method}, {backend.name}, {pool.workers} worker{'s' if pool.workers > 1 else ''})"
    with progress_bar(total, label, unit="s", enabled=progress) as bar:
        done = [0]

        def tick(seconds: float) -> None:
            bar.update(max(0, int(seconds) - done[0]))
            done[0] = max(done[0], int(seconds))
            count = pool.stats.evaluations - evaluations_before
            bar.set_postfix(evaluations=count, per_s=f"{count / max(seconds, 1e-9):.2f}")

        result: solvers.SearchResult | solvers.EvolutionResult
        loop_started = time.perf_counter()
        if settings.method == "evolution":
            names = [screen(step) for step in range(len(EVOLUTION_SELECTION) - 1)] + [SEARCH]
            result = solvers.evolutionary_search(
                costs,
                budget_ms,
                lambda levels, step: losses([levels], names[step])[0],
                _seeds(table, scores, budget_ms, units, seeds),
                curves=errors,
                selection=EVOLUTION_SELECTION,
                space=EVOLUTION_SPACE,
                seed=settings.seed,
                max_seconds=settings.seconds,
                max_evaluations=settings.evaluations,
                patience=EVOLUTION_PATIENCE,
                on_generation=lambda g: tick(g.seconds),
                evaluate_many=lambda candidates, step: losses(candidates, names[step]),
                parallel=1 if pool.workers == 1 else EVOLUTION_SELECTION[0],
            )
        else:
            result = solvers.local_search(
                costs,
                budget_ms,
                lambda levels: losses([levels], SEARCH)[0],
                curves=errors,
                seed=settings.seed,
                max_evaluations=settings.evaluations,
                max_seconds=settings.seconds,
                random_share=SPDY_RANDOM_SHARE,
                on_step=lambda s: tick(s.seconds),
                batch=batch,
                evaluate_many=lambda candidates: losses(candidates, SEARCH),
            )
    loop_seconds = time.perf_counter() - loop_started
    pick_started = time.perf_counter()
    evolved = isinstance(result, solvers.EvolutionResult)
    contenders = []
    try:  # first, so that a searched plan equal to the uniform allocation is reported as "uniform"
        uniform = Recipe(None).levels(table, scores, budget_ms, units)
        contenders.append(Contender("uniform", tuple(uniform), None))
    except solvers.InfeasibleBudgetError:
        pass
    # The plain DP plan (the search's prior) always competes too: a search's best few overfit its
    # sample (MiniLM 2x: SPDY's best scored 0.021 there, 0.118 held out), and the prior often generalises.
    contenders.append(
        Contender("dp", plain_dp(table, scores, budget_ms, units), None if evolved else (1.0,) * len(costs))
    )
    contenders += [
        Contender(f"search #{rank}", c.levels, None if evolved else c.coefficients, c.loss)
        for rank, c in enumerate(result.top, start=1)
    ]
    admissible = _admissible(quality, pool, adapter=adapter, task=task, backend=backend, scores=scores)
    selection = _pick(
        contenders,
        pool,
        scorings,
        examples=len(samples[SELECTION]),
        admissible=admissible,
        apart=apart_from_pick(len(task.calibration), len(samples[SELECTION])),
    )
    chosen = selection.chosen
    if chosen.source == "uniform":
        recipe = Recipe(None)
    elif evolved:
        recipe = Recipe(None, anchor=tuple(chosen.levels))
    else:
        assert chosen.coefficients is not None
        recipe = Recipe(tuple(float(c) for c in chosen.coefficients))
    cost: dict[str, float] = dict(local.clock.as_dict()) if local is not None else {}
    cost["evaluations"] = pool.stats.evaluations - evaluations_before
    cost["examples"] = pool.stats.examples - examples_before
    # The budget is checked between evaluations and leaves the final pick out: say where the time went.
    cost["search_seconds"] = round(loop_seconds, 3)
    cost["pick_seconds"] = round(time.perf_counter() - pick_started, 3)
    if settings.seconds is not None:
        cost["budget_seconds"] = float(settings.seconds)
    return SearchOutcome(
        levels=tuple(chosen.levels),
        recipe=recipe,
        result=result,
        selection=selection,
        method=settings.method,
        seconds=time.perf_counter() - start,
        cost=cost,
        executor=describe(pool),
        scoring=scoring,
        seed_losses=seed_losses,
    )


def choose_scoring(
    pool: CandidatePool, names: Sequence[str], seeds: Sequence[tuple[int, ...]]
) -> tuple[str, dict[str, float] | None]:
    """(the scoring the search runs under, scoring -> the lowest mean loss of ``seeds`` under it on the
    search sample); with one scoring, (it, None) and nothing is evaluated. Ties go to the earlier name
    (the backend's own first)."""
    if len(names) == 1:
        return names[0], None
    requests = [(tuple(levels), SEARCH, name) for name in names for levels in seeds]
    means = [float(np.mean(x)) for x in pool.losses(requests)]
    lowest = {name: min(means[i * len(seeds) : (i + 1) * len(seeds)]) for i, name in enumerate(names)}
    return min(names, key=lambda name: lowest[name]), lowest


def _admissible(
    quality: Callable[[Any], bool] | None, pool: CandidatePool, *, adapter: Any, task: Task, backend: Backend,
    scores: ErrorTable,
) -> Callable[[tuple[int, ...], str], bool] | None:  # fmt: skip
    """``(levels, scoring) -> quality(model at those levels)``, the model built as the search builds candidates."""
    if quality is None:
        return None
    local = pool.samples if isinstance(pool, LocalPool) else None
    builder = local or SampleLosses(  # only builds models: the "ce" objective needs no dense reference
        adapter=adapter, task=task, backend=backend, scores=scores, samples={"build": ()}, objective="ce"
    )
    return lambda levels, scoring: quality(builder.model(levels, scoring))


def _pick(
    contenders: Sequence[Contender],
    pool: CandidatePool,
    names: Sequence[str],
    *,
    examples: int,
    admissible: Callable[[tuple[int, ...], str], bool] | None,
    apart: str | None,
) -> Selection:
    """The final pick: each distinct contender scored once under every scoring on the pool's selection
    sample; its loss is that of the scoring it scored lowest under (the way the apply would fill it).
    ``apart``: the sample the pick's paired test of priors may add (``apart_from_pick``; None: none)."""
    distinct = list(dict.fromkeys(c.levels for c in contenders))
    scored = pool.losses([(tuple(c), SELECTION, name) for c in distinct for name in names])
    held_out: dict[tuple[int, ...], np.ndarray] = {}
    scoring_of: dict[tuple[int, ...], str] = {}
    for i, levels in enumerate(distinct):
        own = scored[i * len(names) : (i + 1) * len(names)]
        best = min(range(len(names)), key=lambda k: float(np.mean(own[k])))
        held_out[levels], scoring_of[levels] = own[best], names[best]
    check = None if admissible is None else (lambda levels: admissible(levels, scoring_of[levels]))
    evidence = None if apart is None else (lambda levels: pool.losses([(levels, apart, scoring_of[levels])])[0])
    selection = select_plan(contenders, held_out.__getitem__, examples=examples, admissible=check, evidence=evidence)
    return replace(selection, contenders=tuple(replace(c, scoring=scoring_of[c.levels]) for c in selection.contenders))


def repick(
    *,
    recipe: Recipe,
    pool: CandidatePool,
    adapter: Any,
    task: Task,
    table: LatencyTable,
    scores: ErrorTable,
    backend: Backend,
    budget_ms: float,
    examples: int,
    quality: Callable[[Any], bool] | None = None,
) -> tuple[tuple[int, ...], str, Selection]:
    """A correction's plan for another budget, through the same final pick as the first plan: the uniform
    allocation, the plain DP plan and ``recipe``'s plan for ``budget_ms``, scored on the pick's examples
    (``pool``'s selection sample); uniform is kept unless another wins with paired confidence.

    Args:
        quality: ``model -> within the limit`` (as for ``search_levels``).

    Returns:
        (levels, the plan's solver label, the selection).
    """
    units = adapter.units()
    contenders = []
    with contextlib.suppress(solvers.InfeasibleBudgetError):
        contenders.append(Contender("uniform", tuple(Recipe(None).levels(table, scores, budget_ms, units)), None))
    contenders.append(Contender("dp", plain_dp(table, scores, budget_ms, units), (1.0,) * len(units)))
    if not recipe.uniform:
        contenders.append(
            Contender(recipe.label, tuple(recipe.levels(table, scores, budget_ms, units)), recipe.coefficients)
        )
    admissible = _admissible(quality, pool, adapter=adapter, task=task, backend=backend, scores=scores)
    selection = _pick(
        contenders,
        pool,
        scoring_names(adapter, backend),
        examples=examples,
        admissible=admissible,
        apart=apart_from_pick(len(task.calibration), examples),
    )
    chosen = selection.chosen
    label = {"uniform": Recipe(None).label, "dp": "dp"}.get(chosen.source, recipe.label)
    return tuple(chosen.levels), label, selection
