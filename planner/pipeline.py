"""``planner run``: the stages composed, writing one folder.

profile (cached table) -> score (task data, cached error table) -> search + solve (plan) -> apply ->
verify (paired timings; re-plan when short) -> report. Each stage is a function with explicit
inputs and a frozen record as output; this module only wires them. The output folder is written to
a temporary sibling and renamed at the end: nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from planner.backends import Backend, get_backend
from planner.config import Measurement, RunConfig
from planner.config.quality import QualityLimit, check_guard_size
from planner.errors import PlannerError
from planner.executors import Executor
from planner.models import LoadedModel
from planner.paths import cache_key
from planner.records.error_table import ErrorTable
from planner.records.headroom import Headroom
from planner.records.plan import Plan
from planner.records.quality import GuardCheck
from planner.records.report import Attempt, Report, executor_text
from planner.records.verification import Verification, target_met
from planner.report.build import build_report
from planner.report.folder import write_run_folder
from planner.stages.apply import base_config, save_pruned
from planner.stages.apply.choose import applied_plan, apply_best
from planner.stages.correct import LIGHTEST_SPEEDUP, Applied, correct, launch_bound, obstacle
from planner.stages.load import configured_task, load_configured
from planner.stages.profile.cache import cached_table
from planner.stages.profile.headroom import measure_headroom
from planner.stages.profile.settle import settle_dense
from planner.stages.recover import RecoverySettings, recover
from planner.stages.recover.files import discard_checkpoint
from planner.stages.score import cached_scores
from planner.stages.search import Recipe, SearchOutcome, check_search, search_levels
from planner.stages.search.runner import repick
from planner.stages.solve import probe_plans, solve_plan, unreachable_message
from planner.stages.verify import check_quality, verify_models
from planner.tasks import Task
from profilers import LatencyTable, ProfilerSettings

STAGES = ("profile", "score", "solve", "search", "apply", "verify")
PROBE_ROUNDS_CAP = 2
"""The probes that settle the dense time run at most this many times the verification's rounds."""


@dataclass
class StageClock:
    """Wall time spent per stage in one run (s)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Prepared:
    """The model, its latency table on this device, and the task: what every plan of a run shares.

    ``notes`` say how the table was obtained when the user should know (re-measured, noisy).
    """

    loaded: LoadedModel
    table: LatencyTable
    task: Task
    notes: tuple[str, ...] = ()


def prepare(
    config: RunConfig,
    clock: StageClock,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    check_loaded: Callable[[LoadedModel], None] = lambda _l: None,
) -> Prepared:
    """Load the model, profile it (or reuse the cached table, re-validated) and build the task;
    ``check_loaded`` refuses a model before any work (it raises ``PlannerError``)."""
    with clock.stage("profile"):
        loaded = load_configured(config)
    check_loaded(loaded)
    with clock.stage("score"):
        task = configured_task(config, loaded)
    settings = config.search_settings(calibration=len(task.calibration), default_examples=task.search_examples)
    check_search(settings, len(task.calibration))
    if config.max_loss is not None:
        check_guard_size(config.quality_limit(), len(task.guard))
    with clock.stage("profile"):
        profiled = cached_table(
            loaded,
            config.measurement(),
            smoothing=config.smoothing,
            cache_dir=config.cache_dir,
            accept_noisy=config.accept_noisy,
            progress=progress,
        )
    notes = [f"latency table {profiled.status}: {profiled.note}"] if profiled.note else []
    table = profiled.table
    log(f"      table {profiled.status}" + (f" ({profiled.note})" if profiled.note else ""))
    if table.meta.noisy and profiled.status != "reused (noisy)":
        warning = noisy_table_warning(table)
        log("      WARNING: " + warning)
        notes.append(warning)
    return Prepared(loaded, table, task, tuple(notes))


def noisy_table_warning(table: LatencyTable) -> str:
    """What a run says about a table measured on a busy machine: which workloads, how wide, what to do."""
    m = table.meta
    widest = table.frame.assign(
        width=(table.frame["ci_high_ms"] - table.frame["ci_low_ms"]) / table.frame["latency_ms"]
    )
    worst = widest.sort_values("width", ascending=False).iloc[0]
    if m.foreign_load is None:
        cause = "the table's timings were noisy"
    elif m.foreign_load >= ProfilerSettings.quiet_load:
        share = f"{100 * m.foreign_load:.0f}%"
        cause = f"the latency table was measured on a busy machine (other processes used {share} of the CPU)"
    else:  # nobody else was busy: the jitter is the machine's own (a shared host, frequency changes)
        cause = (
            f"the table's timings were noisy although other processes used only {100 * m.foreign_load:.0f}% of the CPU"
        )
    return (
        f"{cause}: {len(m.noisy_workloads)} measurements did not "
        f"settle (e.g. {', '.join(m.noisy_workloads[:2])}; widest interval {100 * float(worst['width']):.0f}% of "
        f"{worst['unit']} level {int(worst['level'])}). It is used for this run but kept in the cache marked noisy: "
        "the next run measures again unless --accept-noisy. Close other work, or raise --max-rounds / "
        "--profile-seconds."
    )


def quality_checker(task: Task, dense: nn.Module, limit: QualityLimit) -> Callable[[nn.Module], GuardCheck] | None:
    """``model -> GuardCheck`` on the task's guard split (examples no stage fits or tunes on: never the
    calibration set, never the test set the report's metric comes from); None without a guard split."""
    if len(task.guard) == 0:
        return None
    reference = task.evaluate(dense, task.guard)
    return lambda model: check_quality(task, reference, model, limit)


def recover_final(
    prepared: Prepared,
    final: Applied,
    settings: RecoverySettings,
    measurement: Measurement,
    *,
    cache_dir: Path,
    clock: StageClock,
    progress: bool,
    log: Callable[[str], None],
    check: Callable[[nn.Module], GuardCheck] | None = None,
) -> tuple[Applied, dict[str, object]]:
    """The recover stage of a run: distil the kept plan's model from the dense one (checkpointed in
    the cache, so an interrupted run resumes), then measure the recovered model against the dense one
    (shapes are unchanged: the speedup must be too)."""
    task, adapter = prepared.task, prepared.loaded.adapter
    budget = " and ".join(
        part
        for part in (
            f"{settings.seconds:g} s" if settings.seconds else "",
            f"{settings.tokens} tokens" if settings.tokens else "",
        )
        if part
    )
    log(f"[5+/6] recover: distilling from the dense model on {len(task.training)} training examples ({budget})")
    with clock.stage("recover"):
        before = task.evaluate(final.model)
        key = cache_key(
            "recovery", prepared.loaded.fingerprint, [(c.unit, c.level, c.keep) for c in final.plan.units],
            task.provenance(), settings.fingerprint(),
        )  # fmt: skip
        checkpoint = cache_dir / "recovery" / f"{key}.pt"
        recovered, record = recover(
            adapter, final.model, task, settings, checkpoint=checkpoint, model_key=key, progress=progress, log=log,
            in_place=True, device=measurement.device,
        )  # fmt: skip
        discard_checkpoint(checkpoint)
    log(f"      recovery: {record.steps} steps, {record.tokens} tokens, {record.seconds:.0f} s ({record.stopped})")
    with clock.stage("verify"):
        verification = verify_models(
            adapter, {"dense": prepared.loaded.model, "pruned": recovered}, measurement, progress=progress
        )
    summary = {**record.as_dict(), "pruned_metric": before.value}
    return Applied(final.plan, recovered, verification, None if check is None else check(recovered)), summary


def quality_ending(
    final: Applied,
    attempts: Sequence[Attempt],
    allowed: QualityLimit,
    *,
    target_speedup: float,
    headroom: Headroom | None,
    in_the_way: str,
) -> str | None:
    """The run's ending sentence when the quality limit shaped it (None otherwise); every word of it is
    what the attempts measured: "stayed within it" only for a plan whose guard interval is within."""

    def headroom_first(text: str) -> str:  # when no plan gives speed, the other runtime is the answer
        if headroom is None or headroom.speedup <= 1.0:
            return text
        return f"{headroom.text(target_speedup)}: that speedup costs no quality. {text}"

    limited = [a for a in attempts if a.guard_high is not None and a.guard_high > allowed.value + 1e-9]
    if final.guard is None or not limited:  # the limit did not shape this run: the speed verdict says it all
        return None
    if not final.admissible:
        lightest = min(attempts, key=lambda a: a.planned_for)
        loss, low, high = lightest.guard_loss, lightest.guard_low, lightest.guard_high
        lost = (
            f"{allowed.describe_loss(loss)} [{allowed.amount(low)}, {allowed.amount(high)}]"
            if loss is not None and low is not None and high is not None
            else "more"
        )
        tried = (
            f"the lightest, planned for {lightest.planned_for:.2f}x and measured {lightest.measured_speedup:.2f}x, "
            f"lost {lost}"
        )
        if lightest.planned_for <= LIGHTEST_SPEEDUP + 1e-9:
            text = f"no plan within {allowed.describe()} gives a speedup at this shape: every plan tried lost more"
        else:  # corrections ran out before the lightest plan was tried: say only what was tried
            text = (
                f"no plan tried kept {allowed.describe()}: every one lost more, and lighter plans were not tried "
                "(raise --corrections)"
            )
        return headroom_first(text + f" on the guard split ({tried}). What stands in the way: {in_the_way}.")
    estimate = final.verification.speedup("pruned")
    if estimate.low <= 1.0:  # the fastest plan within the limit gives no speedup one can be sure of
        return headroom_first(
            f"no plan within {allowed.describe()} gives a speedup at this shape: the fastest within it measured "
            f"{estimate.value:.2f}x [{estimate.low:.2f}-{estimate.high:.2f}]. What stands in the way: {in_the_way}."
        )
    if not target_met(estimate.value, target_speedup):
        guard = final.guard
        return (
            f"no plan within {allowed.describe()} reached {target_speedup:g}x; this is the fastest that stayed within "
            f"it (guard split: lost {guard.text(allowed)}). What stands in the way: "
            f"{in_the_way}."
        )
    return None


def busy_verification_note(verification: Verification, *, out: Path) -> str:
    """What a run says when its verification ran on a busy machine."""
    return (
        f"the verification ran while other processes kept the machine busy ({verification.busy_rounds} of "
        f"{len(verification.loads)} rounds): the measured speedup does not represent this machine, and no heavier "
        f"plan was made on its strength. Re-verify on a quiet machine: planner verify --pruned {out}/pruned"
    )


def check_reachable(table: LatencyTable, speedups: list[float]) -> None:
    """Refuse targets above the table's maximum achievable speedup (the message says the maximum)."""
    best = table.max_speedup()
    too_far = [s for s in speedups if s > best]
    if too_far:
        targets = f"{too_far[0]:g}x is" if len(too_far) == 1 else f"targets {too_far} are"
        raise PlannerError(unreachable_message(targets, best))


def make_plan(
    prepared: Prepared,
    *,
    backend: Backend,
    scores: ErrorTable,
    speedup: float,
    solver: str,
    seed: int,
    search: SearchOutcome | None = None,
    recipe: Recipe | None = None,
    levels: Sequence[int] | None = None,
    label: str | None = None,
) -> Plan:
    """The solve stage for a run: given ``levels`` (a correction's final pick, labelled ``label``), the
    search's levels, a recipe re-planned for this target, or the solver."""
    if levels is not None:
        levels = list(levels)
    elif search is not None:
        levels, label = list(search.levels), search.recipe.label
    elif recipe is not None and not recipe.uniform:
        budget = prepared.table.budget_ms(speedup)
        levels, label = recipe.levels(prepared.table, scores, budget, prepared.loaded.adapter.units()), recipe.label
    elif recipe is not None:  # a correction of a pick that was the uniform allocation
        solver, label = "uniform", recipe.label
    return solve_plan(
        loaded=prepared.loaded,
        table=prepared.table,
        scores=scores,
        backend=backend,
        speedup=speedup,
        solver=solver,
        seed=seed,
        levels=levels,
        solver_label=label,
    )


def run_pipeline(
    config: RunConfig,
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> Report:
    """Run every stage and write ``out``; returns the report (also ``out/report.json``)."""
    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    with Executor(config.executor_settings(), device=config.device) as executor:
        return _run(config, executor, target, progress=progress, log=log)


def _run(
    config: RunConfig,
    executor: Executor,
    target: Path,
    *,
    progress: bool,
    log: Callable[[str], None],
) -> Report:
    clock = StageClock()
    log("[1/6] profile: latency table (cached per model, device, runtime, shape and phase)")
    prepared = prepare(config, clock, progress=progress, log=log)
    table = prepared.table
    log(f"      {table.summary().splitlines()[1].strip()}; max {table.max_speedup():.2f}x")
    with clock.stage("profile"):
        headroom = measure_headroom(prepared.loaded, config.measurement())
    if headroom is not None:
        log(f"      headroom: {headroom.text(config.speedup)}")
    check_reachable(table, [config.speedup])
    backend = get_backend(config.backend, progress=progress)
    log(f"[2/6] score: {config.backend} on {len(prepared.task.calibration)} calibration examples")
    with clock.stage("score"):
        scores = cached_scores(backend, prepared.loaded, prepared.task, cache_dir=config.cache_dir)
    measurement = config.measurement(rounds=config.verify_rounds)
    profiled_table = table
    probing = dataclasses.replace(measurement, max_rounds=PROBE_ROUNDS_CAP * measurement.rounds)
    with clock.stage("profile"):
        table, settling = settle_dense(
            prepared.loaded,
            table,
            probe_plans(prepared.loaded, table, scores, config.speedup),
            lambda models: verify_models(prepared.loaded.adapter, models, probing, progress=progress),
        )
    prepared = dataclasses.replace(prepared, table=table)
    log(f"      {settling.text()}")
    task = prepared.task
    settings = config.search_settings(calibration=len(task.calibration), default_examples=task.search_examples)
    allowed = config.quality_limit()
    dense = prepared.loaded.model
    check = quality_checker(task, dense, allowed)
    if check is None:
        log(f"      no guard split (the data has no training examples left): {allowed.describe()} is checked on the "
            "test set only, after the run")  # fmt: skip
    else:
        log(f"      quality: {allowed.describe()} checked on {len(task.guard)} guard examples (95% upper end)")
    admissible = None if check is None else (lambda model: check(model).within)
    search, pool = None, None
    if settings.method != "none":
        budget = f"{settings.seconds:g} s" if settings.seconds is not None else f"{settings.evaluations} evaluations"
        log(f"[3/6] search ({settings.method}, {budget}) and final pick")
        with clock.stage("search"):
            pool = executor.search_pool(
                config=config, loaded=prepared.loaded, task=task, backend=backend, scores=scores, settings=settings
            )
            search = search_levels(
                adapter=prepared.loaded.adapter,
                task=prepared.task,
                table=table,
                scores=scores,
                backend=backend,
                budget_ms=table.budget_ms(config.speedup),
                settings=settings,
                progress=progress,
                quality=admissible,
                pool=pool,
            )
            log(f"      {search.text()}")
            if search.executor is not None:
                log(f"      search: {executor_text(search.executor)}")
            time_text = search.summary().time_text
            if time_text:
                log(f"      {time_text}")

    made: dict[tuple[tuple[object, ...], ...], Applied] = {}  # by the cut as planned (a recipe may re-choose the units)

    def applied(speedup: float, *, first: bool) -> Applied:
        """The plan for ``speedup`` applied, verified and guarded; a plan that repeats one already made
        (same units at the same levels) is not made again: its attempt is returned, and ``correct``
        steps on."""
        with clock.stage("solve"):
            levels, label = None, None
            if not first and search is not None and pool is not None:
                levels, label, _ = repick(
                    recipe=search.recipe,
                    pool=pool,
                    adapter=prepared.loaded.adapter,
                    task=task,
                    table=table,
                    scores=scores,
                    backend=backend,
                    budget_ms=table.budget_ms(speedup),
                    examples=search.selection.examples,
                    quality=admissible,
                )
            plan = make_plan(
                prepared,
                backend=backend,
                scores=scores,
                speedup=speedup,
                solver=config.solver,
                seed=config.seed,
                search=search if first else None,
                levels=levels,
                label=label,
            )
        if plan.cut() in made:
            return made[plan.cut()]
        log(f"[4/6] apply: {plan.solver} plan, predicted {plan.predicted_speedup:.2f}x")
        with clock.stage("apply"):
            pruned, recipe = apply_best(backend, prepared.loaded.adapter, plan, prepared.task, log=log)
        log("[5/6] verify: dense vs pruned latency, interleaved; quality on the guard split")
        with clock.stage("verify"):
            verification = verify_models(
                prepared.loaded.adapter, {"dense": dense, "pruned": pruned}, measurement, progress=progress
            )
            guard = None if check is None else check(pruned)
        if guard is not None:
            log(f"      guard split: lost {guard.text(allowed)} (limit {allowed.describe()})")
        name = None if recipe is None else recipe.recipe
        made[plan.cut()] = Applied(applied_plan(plan, recipe), pruned, verification, guard, recipe=name)
        return made[plan.cut()]

    def remeasure(current: Applied) -> Applied:
        with clock.stage("verify"):
            more = verify_models(
                prepared.loaded.adapter, {"dense": dense, "pruned": current.model}, measurement, progress=progress
            )
        return dataclasses.replace(current, verification=current.verification.extended(more))

    final, attempts = correct(
        applied(config.speedup, first=True),
        target_speedup=config.speedup,
        max_speedup=table.max_speedup(),
        corrections=config.corrections,
        replan=lambda speedup: applied(speedup, first=False),
        remeasure=remeasure,
        describe_loss=lambda g: g.text(allowed),
        log=log,
    )
    notes = list(prepared.notes)
    in_the_way = obstacle(
        launch_bound_table=launch_bound(table.unit_costs()),
        device=table.meta.device,
        execution=table.meta.execution,
        limited=check is not None,
    )
    if final.verification.busy:
        notes.append(busy_verification_note(final.verification, out=target))
        log("      WARNING: " + notes[-1])
    ending = quality_ending(
        final, attempts, allowed, target_speedup=config.speedup, headroom=headroom, in_the_way=in_the_way
    )
    if ending is not None:
        notes.insert(0, ending)
        log("      " + ending)
    if final.guard is not None and not final.guard.resolves and final.guard.low <= final.guard.limit:
        notes.append(
            f"the guard split ({final.guard.examples} examples) is too small to resolve {allowed.describe()}: the "
            f"loss's 95% interval is +-{final.guard.half_width:.3g}; about {final.guard.examples_needed()} examples "
            "would (--guard-size, with enough data)."
        )
        log("      " + notes[-1])
    recovery = None
    recovery_settings = config.recovery_settings()
    if recovery_settings is not None:
        final, recovery = recover_final(
            prepared, final, recovery_settings, measurement, cache_dir=config.cache_dir, clock=clock,
            progress=progress, log=log, check=check,
        )  # fmt: skip
    log(f"[6/6] report: held-out {prepared.task.metric} of the dense and the pruned model")
    with clock.stage("verify"):
        dense_metric = prepared.task.evaluate(dense)
        pruned_metric = prepared.task.evaluate(final.model)
    if not allowed.within(dense_metric.value, pruned_metric.value):
        lost = allowed.describe_loss(allowed.loss(dense_metric.value, pruned_metric.value))
        notes.append(
            f"quality lost: the pruned model lost {lost} on the test set, more than {allowed.describe()} "
            f"({'--max-loss' if allowed.explicit else 'the default guard; set --max-loss to plan within a limit'}). "
            "The speed was bought with the model's quality: " + in_the_way + "."
        )
        log("      WARNING: " + notes[-1])
    report = build_report(
        model=config.model,
        data=config.data,
        task=prepared.task.name,
        target_speedup=config.speedup,
        table=table,
        plan=final.plan,
        verification=final.verification,
        dense_metric=dense_metric,
        pruned_metric=pruned_metric,
        search=None if search is None else search.summary(),
        attempts=attempts,
        stage_seconds=clock.seconds,
        config=config.describe(),
        quality_limit=allowed,
        headroom=headroom,
        settling=settling,
        recovery=recovery,
        notes=tuple(notes),
        planned_speedup=next(a.planned_for for a in attempts if a.predicted_speedup == final.plan.predicted_speedup),
        guard=final.guard,
    )
    write_run_folder(
        target,
        report=report,
        table=profiled_table,
        plan=final.plan,
        write_model=lambda folder: save_pruned(
            prepared.task.deployable(final.model),
            folder,
            plan=final.plan,
            shape=prepared.loaded.adapter.kept_shape(final.model),
            base_config=base_config(prepared.loaded),
        ),
        search_history=None if search is None else search.result.history,
    )
    return report
