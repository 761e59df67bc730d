"""``planner sweep``: the metric/speedup trade-off of several methods at several targets, with intervals
that tell a win from noise.

For each target: the planner with each search (evolution, SPDY), the uniform allocation (Fisher scores,
same table) and uniform magnitude pruning; each applied, all timed interleaved with the dense model in
one run (paired speedups with 95% intervals) and evaluated on the held-out test set, which no search
or final pick saw. Against the uniform allocation of the same target each method gets the paired
difference of the task metric (accuracy: over test documents; perplexity: over windows) and of the
held-out KL to the dense model, with 95% bootstrap intervals and a "win" / "tie" / "loss" verdict.

Like for like: uniform's coarse grid lands above its target (it predicted 1.61x for 1.5x), and the
table's error differs between allocations, so a searched plan and uniform's plan for one target
measure different speedups. When they differ by more than ``MATCH_TOLERANCE``, the searched method is
planned again for ``its target x uniform's measured / its own measured`` (a proportional step toward
uniform's measured speed), measured, and reported beside (``matched_to``), so the two are compared
at the same measured speed. A re-plan that still measures more than ``MATCH_TOLERANCE`` away gets one
more step of the same kind, and then a third along the secant through the two (``next_target``; the
table's bias grows with the cut, so one step fell 5% short of depth's speed on SmolLM2 prefill and two
fell 4% short in decode); the closest is reported, or the closest on each side when they bracket the
baseline's speed.
Each re-plan is timed in the same run as the baseline it is matched to, and compared with the
baseline's speed in that run (``baseline_speedup``), so no comparison rests on a speedup staying put
between runs (SmolLM2 decode: the dense step read 56 ms in one verify and 67 ms in the next).
Each compared row's ``at_equal_speed`` reads all of a method's rows against one baseline at the
baseline's measured speed (``equal_speed_verdict``).

The peers (``PEERS``: depth pruning by Block Influence as ShortGPT does it, FLAP) are what
practitioners use instead of a planner; they sit at their own measured speed, compared with uniform
at their target, and every searched method is planned again at each peer's measured speed too
(``matched_to`` names the peer's row; where the searched plan already measured within tolerance of a
peer, its own model gets a second row against the peer), so each row says which ``baseline`` its
paired difference is to.

With ``--recover-seconds`` / ``--recover-tokens`` every method's model is distilled from the dense one
with the same budget before it is timed and evaluated, and its held-out metric before recovery is
kept beside (``metric_before_recovery``, ``vs_baseline_before`` with its interval and verdict): the
same allocation question asked before and after recovery, on the same test examples.

With ``--executor ray`` each (target, method) job (search, apply, held-out metric and KL) runs on a
Ray worker holding its own copy of the model (``SweepWorker``); the pruned models come back to the
driver, which times them all, interleaved, in one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from planner.backends import get_backend
from planner.config import Measurement, RunConfig
from planner.errors import PlannerError
from planner.executors import Executor
from planner.executors.worker import Worker, load_checked
from planner.models import LoadedModel
from planner.pipeline import Prepared, StageClock, check_reachable, make_plan, prepare
from planner.records.plan import Plan
from planner.report.build import kept_lists
from planner.stages.apply.choose import applied_plan, apply_best
from planner.stages.recover import recover
from planner.stages.score import cached_scores
from planner.stages.search import search_levels
from planner.stages.verify import verify_models
from planner.tasks.base import MetricResult
from planner.tasks.compare import metric_interval, paired_mean_difference, paired_metric_difference
from profilers.atomic import atomic_dir

SWEEP_SEARCH_SECONDS = 30.0
"""Search time per plan when ``planner sweep`` is not given ``--search-seconds`` (it plans many)."""

MATCH_TOLERANCE = 0.03
"""Uniform measured this much (relative) above its target: plan the searched methods at its speed too."""

MATCH_STEPS = 3
"""Re-plans toward a baseline's measured speed at most: a proportional step, another, then a secant."""


@dataclass(frozen=True)
class SweepMethod:
    """One way of making a plan: which scores, which solver, which search ("none": plain solver)."""

    label: str
    backend: str
    solver: str
    search: str

    @property
    def searched(self) -> bool:
        return self.solver == "dp"


SWEEP_METHODS = {
    "evolution": SweepMethod("planner (evolution)", "fisher", "dp", "evolution"),
    "spdy": SweepMethod("planner (spdy)", "fisher", "dp", "spdy"),
    "dp": SweepMethod("planner (dp)", "fisher", "dp", "none"),
    "uniform": SweepMethod("uniform (fisher)", "fisher", "uniform", "none"),
    "magnitude": SweepMethod("uniform (magnitude)", "magnitude", "uniform", "none"),
    "depth": SweepMethod("depth (ShortGPT)", "depth", "depth", "none"),
    "flap": SweepMethod("FLAP", "flap", "flap", "none"),
}
DEFAULT_SWEEP_METHODS = ("evolution", "spdy", "uniform", "magnitude")
BASELINE = "uniform"
PEERS = ("depth", "flap")
"""Methods practitioners use instead of a planner: each searched method is also planned again at
their measured speed (as for uniform's), so the comparison is at equal measured speed."""


@dataclass
class _Entry:
    """One applied plan of the sweep (mutable while it is measured and evaluated)."""

    key: str
    method: SweepMethod
    target: float
    plan: Plan
    model: nn.Module
    matched_to: str = ""
    row: dict[str, Any] | None = None
    evaluated: Evaluated | None = None
    """Held-out metric and KL when a worker computed them (else ``_evaluate`` does)."""
    before: MetricResult | None = None
    """Held-out metric before recovery (None: recovery off)."""


def refuse_peers(names: Sequence[str], loaded: LoadedModel) -> None:
    """Refuse, before any work, a peer method the model cannot take (one line naming why and the fix)."""
    from planner.backends import depth, flap

    refusals = {"depth": depth.refusal, "flap": flap.refusal}
    for name in names:
        if name in refusals:
            why = refusals[name](loaded.adapter)
            if why is not None:
                raise PlannerError(why)


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The sweep's method names, validated; the uniform baseline is always included."""
    unknown = [m for m in methods if m not in SWEEP_METHODS]
    if unknown or not methods:
        raise PlannerError(
            f"The 'methods' parameter must list some of {', '.join(SWEEP_METHODS)}. Got {list(methods)!r} instead."
        )
    ordered = [m for m in SWEEP_METHODS if m in methods]
    return tuple(ordered if BASELINE in ordered else [*ordered, BASELINE])


class _Planner:
    """Plans and applies one method at one speedup on the prepared model (scores cached per backend)."""

    def __init__(
        self,
        config: RunConfig,
        prepared: Prepared,
        log: Callable[[str], None],
        scores: Mapping[str, Any] | None = None,
    ) -> None:
        self.config, self.prepared, self.log = config, prepared, log
        self.scores: dict[str, Any] = dict(scores or {})
        # A re-plan often comes out as a plan already applied (the same heads and neurons for another
        # target); applying it again would cost every recipe's tuning pass for the same model.
        self.applied: dict[tuple[str, tuple[Any, ...]], Made] = {}

    def scores_for(self, name: str) -> Any:
        """The backend's error table (computed once, cached on disk)."""
        if name not in self.scores:
            self.scores[name] = cached_scores(
                get_backend(name), self.prepared.loaded, self.prepared.task, cache_dir=self.config.cache_dir
            )
        return self.scores[name]

    def __call__(self, method: SweepMethod, speedup: float) -> Made:
        """(plan, model: recovered when recovery is on, the held-out metric before recovery or None)."""
        prepared, config = self.prepared, self.config
        backend = get_backend(method.backend)
        scores = self.scores_for(method.backend)
        task = prepared.task
        search = None
        if method.search != "none":
            settings = config.replace(search=method.search, solver=method.solver).search_settings(
                calibration=len(task.calibration), default_examples=task.search_examples
            )
            if settings.method != "none":
                search = search_levels(
                    adapter=prepared.loaded.adapter,
                    task=task,
                    table=prepared.table,
                    scores=scores,
                    backend=backend,
                    budget_ms=prepared.table.budget_ms(speedup),
                    settings=settings,
                )
                self.log(f"      {method.label} {speedup:g}x {search.text()}")
        plan = make_plan(
            prepared,
            backend=backend,
            scores=scores,
            speedup=speedup,
            solver=method.solver,
            seed=config.seed,
            search=search,
        )
        key = (method.backend, plan.cut())
        if key in self.applied:
            held, model, before = self.applied[key]
            self.log(f"      {method.label} {speedup:g}x: the same cut as a plan already applied; its model reused")
            return replace(plan, units=held.units), model, before
        self.applied[key] = self._apply(method, speedup, backend, plan)
        return self.applied[key]

    def _apply(self, method: SweepMethod, speedup: float, backend: Any, plan: Plan) -> Made:
        """``plan`` applied by the backend's best recipe, and recovered when recovery is on."""
        prepared, config, task = self.prepared, self.config, self.prepared.task
        model, choice = apply_best(backend, prepared.loaded.adapter, plan, task)
        if choice is not None:
            self.log(f"      {method.label} {speedup:g}x {choice.text()}")
        plan = applied_plan(plan, choice)
        recovery = config.recovery_settings()
        if recovery is None:
            return plan, model, None
        before = task.evaluate(model)
        # Every method's model gets the same recovery budget: the frontier compares like with like.
        recovered, record = recover(prepared.loaded.adapter, model, task, recovery, in_place=True, device=config.device)
        first, best = record.validation[0].kl, min(p.kl for p in record.validation)
        self.log(
            f"      {method.label} {speedup:g}x recovered: {record.steps} steps, validation KL {first:.4f}->{best:.4f}"
        )
        return plan, recovered, before


Evaluated = tuple[MetricResult, np.ndarray]
"""A model's held-out metric and per-example KL to the dense model on the test set."""

Made = tuple[Plan, nn.Module, MetricResult | None]
"""A job's plan, its applied (and, with recovery, recovered) model, its metric before recovery."""

Done = tuple[Plan, nn.Module, MetricResult | None, Evaluated | None]
"""``Made`` plus the held-out metric and KL when a worker computed them."""

Job = tuple[str, float]
"""(method name in ``SWEEP_METHODS``, speedup to plan for)."""


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep worker needs: the configuration, the driver's table and backend scores, and the
    checks that it rebuilt the same model and data (``planner.executors.worker.load_checked``)."""

    config: RunConfig
    table: Any
    scores: dict[str, Any]
    fingerprint: str
    data_digest: str
    threads: int


class SweepWorker(Worker):
    """Plans, applies and evaluates sweep jobs on its own copy of the model (a Ray actor); its searches
    run in this process. Timing stays with the driver."""

    def __init__(self, spec: SweepSpec) -> None:
        torch.set_num_threads(spec.threads)
        loaded, task = load_checked(spec.config, spec.fingerprint, spec.data_digest)
        self.prepared = Prepared(loaded, spec.table, task)
        self.planner = _Planner(spec.config, self.prepared, lambda _m: None, spec.scores)
        self._reference: Any = None

    def job(self, name: str, speedup: float) -> Done:
        plan, model, before = self.planner(SWEEP_METHODS[name], speedup)
        task = self.prepared.task
        if self._reference is None:
            self._reference = task.reference(self.prepared.loaded.model, task.test)
        return plan, model, before, (task.evaluate(model), task.divergence(model, task.test, self._reference))


class _Jobs:
    """Runs sweep jobs here, one after another, or on the executor's Ray workers, all at once."""

    def __init__(
        self,
        config: RunConfig,
        prepared: Prepared,
        executor: Executor,
        names: Sequence[str],
        log: Callable[[str], None],
    ) -> None:
        self.planner = _Planner(config, prepared, log)
        self.pool: Any = None
        if executor.connection is not None:
            from planner.executors.worker import calibration_digest

            spec = SweepSpec(
                config=config,
                table=prepared.table,
                scores={b: self.planner.scores_for(b) for b in {SWEEP_METHODS[n].backend for n in names}},
                fingerprint=prepared.loaded.fingerprint,
                data_digest=calibration_digest(prepared.task),
                threads=executor.threads,
            )
            self.pool = executor.actors(spec, SweepWorker)
            log(f"sweep: {executor.workers} Ray workers plan, apply and evaluate; timing stays here")

    def __call__(self, jobs: Sequence[Job]) -> list[Done]:
        if self.pool is not None:
            return list(self.pool.map("job", list(jobs)))
        return [(*self.planner(SWEEP_METHODS[name], speedup), None) for name, speedup in jobs]


def run_sweep(
    config: RunConfig,
    speedups: list[float],
    *,
    out: str | Path,
    methods: Sequence[str] = DEFAULT_SWEEP_METHODS,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> pd.DataFrame:
    """Plan, apply, measure and evaluate every method at every target; writes ``out/pareto.csv`` and
    ``out/pareto.png`` (+ .svg) and returns the pareto frame (columns: see the README)."""
    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    if not speedups or any(not s > 1.0 for s in speedups):
        raise PlannerError(f"The 'speedups' parameter must list targets > 1.0. Got {speedups!r} instead.")
    names = check_methods(methods)
    with Executor(config.executor_settings(), device=config.device) as executor:
        return _sweep(config, speedups, names, executor, target=target, progress=progress, log=log)


def _sweep(
    config: RunConfig,
    speedups: list[float],
    names: Sequence[str],
    executor: Executor,
    *,
    target: Path,
    progress: bool,
    log: Callable[[str], None],
) -> pd.DataFrame:
    from planner.report import plots

    prepared = prepare(config, StageClock(), progress=progress, check_loaded=lambda loaded: refuse_peers(names, loaded))
    check_reachable(prepared.table, speedups)
    run_jobs = _Jobs(config, prepared, executor, names, log)
    jobs = [(name, speedup) for speedup in speedups for name in names]
    log("plan and apply: " + ", ".join(f"{SWEEP_METHODS[n].label} {s:g}x" for n, s in jobs))
    entries = [
        _Entry(f"{name}@{speedup:g}", SWEEP_METHODS[name], speedup, plan, model, evaluated=evaluated, before=before)
        for (name, speedup), (plan, model, before, evaluated) in zip(jobs, run_jobs(jobs), strict=True)
    ]
    measurement = config.measurement(rounds=config.verify_rounds)
    loaded = prepared.loaded

    def verify(timed: list[_Entry]) -> None:
        _verify(loaded, timed, entries, measurement)

    log("verify: every pruned model timed interleaved with the dense one")
    verify(entries)
    matched, same_speed = _matched_entries(entries, run_jobs, prepared.table.max_speedup(), log)
    if matched:
        log("verify: plans made for the baselines' measured speeds, timed again beside them")
        verify(matched)
        steps = {e.key: [e] for e in matched}
        latest = matched
        for _ in range(MATCH_STEPS - 1):
            previous = {key: tried[-2] for key, tried in steps.items() if len(tried) >= 2}
            latest = _matched_again(latest, entries, run_jobs, prepared.table.max_speedup(), log, previous=previous)
            if not latest:
                break
            log("verify: plans made again where the last re-plan missed the baseline's speed")
            verify(latest)
            for entry in latest:
                steps[entry.key].append(entry)
        matched = _closest(steps, entries)
    log(f"evaluate: held-out {prepared.task.metric} and KL to the dense model on {len(prepared.task.test)} examples")
    frame = plots.pareto_frame(_evaluate(entries + matched + same_speed, prepared))
    with atomic_dir(target, overwrite=True) as tmp:
        frame.to_csv(tmp / "pareto.csv", index=False)
        plots.save_figure(plots.plot_pareto(frame), tmp / "pareto")
    return frame


def _verify(loaded: LoadedModel, timed: list[_Entry], entries: list[_Entry], measurement: Measurement) -> None:
    """Time ``timed`` interleaved with the dense model and with the baselines (of ``entries``) they are
    matched to, and fill in their rows."""
    bases = {e.key: e.model for e in entries if e.key in {t.matched_to for t in timed}}
    models = {"dense": loaded.model, **{e.key: e.model for e in timed}, **bases}
    _measure(timed, verify_models(loaded.adapter, models, measurement))


def _measure(entries: list[_Entry], verification: Any) -> None:
    """Each entry's row from one verify run; a re-plan's also holds its baseline's speed in that run."""
    for entry in entries:
        estimate = verification.speedup(entry.key)
        entry.row = {
            "method": entry.method.label,
            "target_speedup": entry.target,
            "matched_to": entry.matched_to,
            "planned_for": entry.plan.target_speedup,
            "predicted_speedup": entry.plan.predicted_speedup,
            "measured_speedup": estimate.value,
            "speedup_low": estimate.low,
            "speedup_high": estimate.high,
            "pruned_ms": verification[entry.key].median_ms,
            "dense_ms": verification["dense"].median_ms,
            "solver": entry.plan.solver,
            **dict(zip(("heads_kept", "neurons_kept", "groups_kept"), map(list, kept_lists(entry.plan)), strict=True)),
        }
        if entry.matched_to:
            entry.row["baseline_speedup"] = verification.speedup(entry.matched_to).value


def _matched_entries(
    entries: list[_Entry],
    run_jobs: Callable[[Sequence[Job]], list[Done]],
    max_speedup: float,
    log: Callable[[str], None],
) -> tuple[list[_Entry], list[_Entry]]:
    """Searched methods planned again toward each baseline's measured speed (uniform's, and each peer's)
    where theirs differs from it; and where it does not differ from a peer's, the searched method's own
    model compared with that peer (a second row of the same model and measurement, ``matched_to`` the
    peer: its own row is compared with uniform).

    Returns:
        (entries planned again, to be measured; rows of already measured models)
    """
    names = {method: name for name, method in SWEEP_METHODS.items()}
    todo: list[tuple[_Entry, _Entry, float]] = []  # (entry, the baseline's entry, speedup to plan for)
    same_speed: list[_Entry] = []
    for base in [e for e in entries if _name(e.key) in (BASELINE, *PEERS)]:
        assert base.row is not None
        base_speed = float(base.row["measured_speedup"])
        for entry in entries:
            if not entry.method.searched or entry.target != base.target:
                continue
            assert entry.row is not None
            own_speed = float(entry.row["measured_speedup"])
            if abs(own_speed / base_speed - 1.0) <= MATCH_TOLERANCE:
                if _name(base.key) in PEERS:
                    same_speed.append(_same_model(entry, base))
                continue
            planned = min(entry.target * base_speed / own_speed, max_speedup)
            if planned <= 1.0:
                continue
            log(
                f"{base.target:g}x: {entry.method.label} measured {own_speed:.2f}x, {base.method.label} "
                f"{base_speed:.2f}x: planned again for {planned:.2f}x"
            )
            todo.append((entry, base, planned))
    done = run_jobs([(names[entry.method], planned) for entry, _, planned in todo])
    planned_again = [
        _Entry(
            f"{entry.key}={_name(base.key)}",
            entry.method,
            base.target,
            plan,
            model,
            base.key,
            evaluated=evaluated,
            before=before,
        )
        for (entry, base, _), (plan, model, before, evaluated) in zip(todo, done, strict=True)
    ]
    return planned_again, same_speed


def _matched_again(
    matched: list[_Entry],
    entries: list[_Entry],
    run_jobs: Callable[[Sequence[Job]], list[Done]],
    max_speedup: float,
    log: Callable[[str], None],
    *,
    previous: Mapping[str, _Entry] | None = None,
) -> list[_Entry]:
    """One more step for each measured re-plan still more than ``MATCH_TOLERANCE`` from its baseline's
    measured speed (``next_target``; ``previous``: the step before each, by key, where there was one).
    """
    names = {method: name for name, method in SWEEP_METHODS.items()}
    speeds = {e.key: float(e.row["measured_speedup"]) for e in entries if e.row is not None}
    todo: list[tuple[_Entry, float]] = []
    for entry in matched:
        assert entry.row is not None
        own, base = float(entry.row["measured_speedup"]), baseline_speed(entry.row, speeds, entry.matched_to)
        if abs(own / base - 1.0) <= MATCH_TOLERANCE:
            continue
        step_before = (previous or {}).get(entry.key)
        earlier = None
        if step_before is not None:
            assert step_before.row is not None
            earlier = (step_before.plan.target_speedup, float(step_before.row["measured_speedup"]))
        planned = min(next_target((entry.plan.target_speedup, own), base, earlier), max_speedup)
        if planned <= 1.0 or abs(planned / entry.plan.target_speedup - 1.0) < 1e-6:
            continue
        log(
            f"{entry.target:g}x: {entry.method.label} planned for {entry.plan.target_speedup:.2f}x measured "
            f"{own:.2f}x, {entry.matched_to} {base:.2f}x: planned again for {planned:.2f}x"
        )
        todo.append((entry, planned))
    done = run_jobs([(names[entry.method], planned) for entry, planned in todo])
    return [
        _Entry(entry.key, entry.method, entry.target, plan, model, entry.matched_to, evaluated=evaluated, before=before)
        for (entry, _), (plan, model, before, evaluated) in zip(todo, done, strict=True)
    ]


def next_target(last: tuple[float, float], base: float, earlier: tuple[float, float] | None = None) -> float:
    """The speedup to plan for next, to measure ``base``.

    Args:
        last: (planned for, measured) of the last re-plan.
        base: the baseline's measured speedup.
        earlier: (planned for, measured) of the re-plan before it, if any.

    Returns:
        The proportional step ``planned x base / measured``; with an earlier re-plan, the secant through
        the two instead, kept in the proportional step's direction and within half to twice its size (in
        log speedup). Two re-plans a whole step apart give a usable slope where the table's error grows
        with the cut (SmolLM2 decode: 1.72x planned measured 1.40x, 1.97x measured 1.54x, for depth's
        1.60x: the proportional step asks 2.05x, the secant 2.08x); a secant through the first plan and
        its first re-plan, close together and noisy, once sent a 1.59x re-plan to 2.2x.
    """
    planned, measured = last
    proportional = math.log(base / measured)
    slope = 0.0 if earlier is None or earlier[0] == planned else (measured - earlier[1]) / (planned - earlier[0])
    if slope <= 0:
        return planned * math.exp(proportional)
    secant = planned + (base - measured) / slope
    step = math.log(secant / planned) if secant > 0 else -math.inf  # a secant below 0: the lowest bound
    low, high = sorted((0.5 * proportional, 2.0 * proportional))
    return planned * math.exp(min(max(step, low), high))


def _closest(steps: Mapping[str, Sequence[_Entry]], entries: list[_Entry]) -> list[_Entry]:
    """Of each re-plan's measured steps, the one closest to its baseline's speed; when none is within
    ``MATCH_TOLERANCE`` and some measured on either side of it, the closest on each side (the pair
    brackets the equal-speed point, which ``equal_speed_verdict`` reads; a later step is keyed ``...~N``,
    N its step)."""
    speeds = {e.key: float(e.row["measured_speedup"]) for e in entries if e.row is not None}

    def miss(entry: _Entry) -> float:
        assert entry.row is not None
        return float(entry.row["measured_speedup"]) / baseline_speed(entry.row, speeds, entry.matched_to) - 1.0

    kept: list[_Entry] = []
    for tried in steps.values():
        numbered = list(enumerate(tried, start=1))
        below = [(n, e) for n, e in numbered if miss(e) < 0]
        above = [(n, e) for n, e in numbered if miss(e) > 0]
        closest = min(numbered, key=lambda ne: abs(miss(ne[1])))
        if abs(miss(closest[1])) <= MATCH_TOLERANCE or not below or not above:
            chosen = [closest]
        else:
            chosen = sorted([max(below, key=lambda ne: miss(ne[1])), min(above, key=lambda ne: miss(ne[1]))])
        kept += [e if i == 0 else replace(e, key=f"{e.key}~{n}") for i, (n, e) in enumerate(chosen)]
    return kept


def equal_speed_verdict(points: Sequence[tuple[float, str]]) -> str:
    """One method against one baseline at the baseline's measured speed, from the method's measured plans.

    Args:
        points: (the plan's measured speed / the baseline's, the plan's metric verdict against it) for
            each of the method's plans compared with that baseline.

    Returns:
        A plan within ``MATCH_TOLERANCE`` of the baseline's speed gives its own verdict; a faster plan that
        wins, or a slower plan that loses, gives that verdict too (a slower plan is never worse, a faster
        never better, on a frontier). "unresolved" when nothing says (a faster plan that does not win, a
        slower one that does not lose) or two say opposite things; else loss, win, tie in that order.
    """
    equal = {verdict for ratio, verdict in points if abs(ratio - 1.0) <= MATCH_TOLERANCE}
    faster_wins = {"win" for ratio, verdict in points if ratio > 1.0 and verdict == "win"}
    slower_loses = {"loss" for ratio, verdict in points if ratio < 1.0 and verdict == "loss"}
    says = equal | faster_wins | slower_loses
    if {"win", "loss"} <= says:
        return "unresolved"
    return next((v for v in ("loss", "win", "tie") if v in says), "unresolved")


def _same_model(entry: _Entry, base: _Entry) -> _Entry:
    """``entry``'s model and measurement again, compared with ``base`` (measured within tolerance of it)."""
    assert entry.row is not None
    key = f"{entry.key}={_name(base.key)}"
    return _Entry(
        key, entry.method, base.target, entry.plan, entry.model, base.key,
        row={**entry.row, "matched_to": base.key}, evaluated=entry.evaluated, before=entry.before,
    )  # fmt: skip


def baseline_speed(row: Mapping[str, Any], speeds: Mapping[str, float], base: str) -> float:
    """The measured speedup of ``base`` in the same verify run as ``row``: a re-plan's baseline is timed
    again beside it (``baseline_speedup``); a first plan shared its run with every baseline."""
    value = row.get("baseline_speedup")
    return float(value if value is not None else speeds[base])


def _name(key: str) -> str:
    """The method name of an entry key (``spdy@2``, ``spdy@2=depth`` -> ``spdy``)."""
    return key.split("@")[0]


def _evaluate(entries: list[_Entry], prepared: Prepared) -> list[dict[str, Any]]:
    """Held-out metric and KL of every entry, and their paired differences to its baseline: the entry it
    was matched to, else uniform at its target."""
    task = prepared.task
    dense_metric = task.evaluate(prepared.loaded.model)
    reference = task.reference(prepared.loaded.model, task.test)
    metrics: dict[str, MetricResult] = {}
    kls: dict[str, np.ndarray] = {}
    by_model: dict[int, Evaluated] = {}  # a model compared with two baselines is evaluated once
    for entry in entries:
        if entry.evaluated is None and id(entry.model) not in by_model:
            by_model[id(entry.model)] = (
                task.evaluate(entry.model),
                task.divergence(entry.model, task.test, reference),
            )
        metrics[entry.key], kls[entry.key] = entry.evaluated or by_model[id(entry.model)]
    labels = {e.key: e.method.label for e in entries}
    speeds = {e.key: float(e.row["measured_speedup"]) for e in entries if e.row is not None}
    rows = []
    for entry in entries:
        assert entry.row is not None
        metric, kl = metrics[entry.key], kls[entry.key]
        low, high = metric_interval(metric)
        row = {
            **entry.row,
            "metric_name": metric.name,
            "metric": metric.value,
            "metric_low": low,
            "metric_high": high,
            "dense_metric": dense_metric.value,
            "heldout_kl": float(kl.mean()),
            "test_examples": metric.examples,
        }
        base = entry.matched_to or f"{BASELINE}@{entry.target:g}"
        row["baseline"] = labels[base] if entry.key != base and base in metrics else ""
        if entry.key == base or base not in metrics:
            row.update(vs_baseline=0.0, vs_baseline_low=0.0, vs_baseline_high=0.0, verdict="baseline")
            row.update(kl_vs_baseline=0.0, kl_vs_baseline_low=0.0, kl_vs_baseline_high=0.0, kl_verdict="baseline")
        else:
            diff = paired_metric_difference(metric, metrics[base])
            kl_diff = paired_mean_difference(kl, kls[base])
            row.update(vs_baseline=diff.difference, vs_baseline_low=diff.low, vs_baseline_high=diff.high)
            row.update(verdict=diff.verdict)
            row.update(
                kl_vs_baseline=kl_diff.difference, kl_vs_baseline_low=kl_diff.low, kl_vs_baseline_high=kl_diff.high
            )
            row.update(kl_verdict=kl_diff.verdict)
            row["baseline_speedup"] = baseline_speed(entry.row, speeds, base)
            row["speed_vs_baseline"] = float(entry.row["measured_speedup"]) / row["baseline_speedup"]
        if entry.before is not None:
            row.update(_before_recovery(entry, entries, base))
        rows.append(row)
    return _with_equal_speed(rows)


def _with_equal_speed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each compared row gains ``at_equal_speed``: its method against its baseline at the baseline's
    measured speed, read from every row of that method, target and baseline (``equal_speed_verdict``)."""
    groups: dict[tuple[str, float, str], list[tuple[float, str]]] = {}
    for row in rows:
        if row["verdict"] != "baseline":
            groups.setdefault((row["method"], row["target_speedup"], row["baseline"]), []).append(
                (row["speed_vs_baseline"], row["verdict"])
            )
    for row in rows:
        group = groups.get((row["method"], row["target_speedup"], row["baseline"]))
        row["at_equal_speed"] = equal_speed_verdict(group) if group else ""
    return rows


def _before_recovery(entry: _Entry, entries: list[_Entry], base: str) -> dict[str, Any]:
    """The held-out metric before recovery and its paired difference to uniform's before recovery."""
    assert entry.before is not None
    row: dict[str, Any] = {"metric_before_recovery": entry.before.value}
    peer = next((e.before for e in entries if e.key == base), None)
    if entry.key == base or peer is None:
        return {**row, "vs_baseline_before": 0.0, "vs_baseline_before_low": 0.0, "vs_baseline_before_high": 0.0,
                "verdict_before": "baseline"}  # fmt: skip
    diff = paired_metric_difference(entry.before, peer)
    return {**row, "vs_baseline_before": diff.difference, "vs_baseline_before_low": diff.low,
            "vs_baseline_before_high": diff.high, "verdict_before": diff.verdict}  # fmt: skip


def sweep_table(frame: pd.DataFrame) -> str:
    """The sweep as aligned text: speedups and metric with intervals, differences to each row's baseline,
    verdicts."""
    accuracy = bool(len(frame)) and str(frame["metric_name"].iloc[0]) == "accuracy"
    scale, unit = (100.0, " pts") if accuracy else (1.0, "")

    def interval(r: Mapping[Any, Any], value: str, low: str, high: str, factor: float = 1.0, digits: int = 2) -> str:
        v, lo, hi = (factor * float(r[k]) for k in (value, low, high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    lines = []
    for r in frame.to_dict("records"):
        matched = isinstance(r["matched_to"], str) and r["matched_to"] != ""
        at = f"{r['target_speedup']:g}x" + (f" ({r['baseline']}'s speed)" if matched else "")
        line = (
            f"{r['method']:22s} {at:22s} predicted {r['predicted_speedup']:.2f}x measured "
            f"{interval(r, 'measured_speedup', 'speedup_low', 'speedup_high')}x | {r['metric_name']} "
            f"{interval(r, 'metric', 'metric_low', 'metric_high', scale)} | KL {r['heldout_kl']:.4f}"
        )
        if r["verdict"] != "baseline":
            vs = interval(r, "vs_baseline", "vs_baseline_low", "vs_baseline_high", scale)
            kl = interval(r, "kl_vs_baseline", "kl_vs_baseline_low", "kl_vs_baseline_high", digits=4)
            line += f" | vs {r['baseline']} {vs}{unit} {r['verdict']}, KL {kl} {r['kl_verdict']}"
            line += f" | at equal speed: {r['at_equal_speed']}"
        before = r.get("metric_before_recovery")
        if before is not None and not pd.isna(before):
            line += f" | before recovery {scale * float(before):.2f}"
            if r["verdict_before"] != "baseline":
                vs = interval(r, "vs_baseline_before", "vs_baseline_before_low", "vs_baseline_before_high", scale)
                line += f", vs {r['baseline']} {vs}{unit} {r['verdict_before']}"
        lines.append(line)
    return "\n".join(lines)
