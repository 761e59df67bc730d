"""``planner run``: profile -> score -> solve -> search -> apply -> verify, writing one folder.

Each stage reuses what an interrupted or earlier run cached (latency table, classification head,
error scores), keyed by the model fingerprint and the settings, so a rerun resumes. The output
folder is written to a temporary sibling and renamed at the end: nothing half-written is left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import solvers
from planner.backends import ErrorTable, get_backend
from planner.backends.base import load_error_table, save_error_table
from planner.classifier import MeanPoolClassifier, accuracy
from planner.errors import PlannerError
from planner.models import LoadedModel, load_model
from planner.models.bert import find_bert
from planner.plan import Plan
from planner.planning import make_plan
from planner.profile import ProfileConfig, profile_model
from planner.pruned_io import save_pruned
from planner.search_eval import CalibrationLoss
from planner.selection import Contender, Selection, select_plan
from planner.task import DEFAULT_CACHE, Task, build_task
from planner.verify import measure_models
from planner.version import __version__
from profilers import LatencyTable
from profilers.atomic import atomic_dir
from profilers.profiler import progress_bar

STAGES = ("profile", "score", "solve", "search", "apply", "verify")


@dataclass(frozen=True)
class RunConfig:
    """Settings of ``planner run`` (all have defaults; see ``planner run --help``)."""

    model: str = "minilm"
    data: str = "bbc"
    speedup: float = 2.0
    runtime: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    seq_len: int = 128
    threads: int = 0
    backend: str = "fisher"
    solver: str = "dp"
    search_seconds: float = 60.0
    search_examples: int = 64
    search_objective: str = "kl"
    calibration_size: int = 256
    rounds: int = 10
    verify_rounds: int = 10
    corrections: int = 1
    seed: int = 0
    cache_dir: Path = field(default_factory=lambda: DEFAULT_CACHE)

    def __post_init__(self) -> None:
        if self.corrections < 0:
            raise PlannerError(f"The 'corrections' parameter must be >= 0. Got {self.corrections} instead.")
        if not self.speedup > 1.0:
            raise PlannerError(f"The 'speedup' parameter must be > 1.0. Got {self.speedup!r} instead.")
        if self.search_seconds < 0:
            raise PlannerError(f"The 'search_seconds' parameter must be >= 0. Got {self.search_seconds!r} instead.")
        if not 1 <= self.search_examples <= self.calibration_size:
            raise PlannerError(
                f"The 'search_examples' parameter must be in 1..calibration_size ({self.calibration_size}). "
                f"Got {self.search_examples} instead."
            )

    def profile_config(self) -> ProfileConfig:
        return ProfileConfig(
            model=self.model,
            runtime=self.runtime,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            threads=self.threads,
            rounds=self.rounds,
            seed=self.seed,
        )


@dataclass
class RunState:
    """What the stages of one run produced (shared by ``run`` and ``sweep``)."""

    loaded: LoadedModel
    table: LatencyTable
    task: Task
    scores: dict[str, ErrorTable] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _timed(state: RunState, stage: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        state.seconds[stage] = state.seconds.get(stage, 0.0) + time.perf_counter() - start


def prepare(config: RunConfig, *, progress: bool = True) -> RunState:
    """Profile (or reuse the cached table) and build the task (head cached)."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    profile = config.profile_config()
    loaded = load_model(config.model, batch_size=config.batch_size, seq_len=config.seq_len)
    tables = config.cache_dir / "tables"
    key = _key(loaded.fingerprint, profile)
    table = profile_model(profile, out=tables / f"table-{key}.csv", loaded=loaded, progress=progress, reuse=True)
    seconds["profile"] = time.perf_counter() - start
    start = time.perf_counter()
    task = build_task(
        loaded,
        data=config.data,
        seq_len=config.seq_len,
        calibration_size=config.calibration_size,
        batch_size=min(32, config.batch_size),
        seed=config.seed,
        cache_dir=config.cache_dir,
    )
    seconds["score"] = time.perf_counter() - start
    return RunState(loaded=loaded, table=table, task=task, seconds=seconds)


def scores_for(state: RunState, config: RunConfig, backend_name: str, *, progress: bool = False) -> ErrorTable:
    """The backend's error table, cached on disk per model, data and calibration settings."""
    if backend_name in state.scores:
        return state.scores[backend_name]
    backend = get_backend(backend_name, progress=progress)
    key = _key(state.loaded.fingerprint, config.data, config.seq_len, config.calibration_size, config.seed)
    path = config.cache_dir / "scores" / f"{backend_name}-{key}.npz"
    if path.is_file():
        scores = load_error_table(path)
    else:
        calibration = state.task.calibration if backend_name == "fisher" else None
        scores = _timed(state, "score", lambda: backend.score(state.loaded.adapter, calibration))
        save_error_table(scores, path)
    state.scores[backend_name] = scores
    return scores


@dataclass(frozen=True)
class PlannedModel:
    """A plan, its search result and final pick (if searched) and the pruned classifier."""

    plan: Plan
    search: solvers.SearchResult | None
    classifier: MeanPoolClassifier
    selection: Selection | None = None

    def replan_recipe(self, solver: str) -> tuple[str, tuple[float, ...] | None]:
        """(solver, coefficients) that re-plan this plan's choice for another budget."""
        if self.selection is None:  # not searched: the solver alone made the plan
            return solver, None
        chosen = self.selection.chosen
        return ("uniform", None) if chosen.coefficients is None else (solver, chosen.coefficients)


def plan_and_apply(
    state: RunState,
    config: RunConfig,
    *,
    backend_name: str,
    solver: str,
    search_seconds: float,
    progress: bool = False,
    coefficients: tuple[float, ...] | None = None,
) -> PlannedModel:
    """Solve (and search) a plan for ``config.speedup``, then apply it and wrap the task head.

    ``coefficients`` (from an earlier search) re-weight the backend's errors instead of searching
    again: used when a plan is corrected for a new budget.
    """
    backend = get_backend(backend_name, progress=progress)
    scores = scores_for(state, config, backend_name, progress=progress)
    budget = state.table.budget_ms(config.speedup)
    search = None
    selection = None
    levels: list[int] | None = None
    label = None
    if coefficients is not None:
        errors = solvers.scaled_errors(coefficients, scores.unit_errors())
        levels = list(solvers.solve_dp(state.table.unit_costs(), errors, budget).levels)
        label = "dp+search"
    elif search_seconds > 0 and solver == "dp":
        search = _search(state, config, backend, scores, budget, search_seconds, progress=progress)
        selection = _timed(state, "search", lambda: _select(state, config, backend, scores, budget, search))
        levels = list(selection.chosen.levels)
        label = "dp+search" if selection.chosen.coefficients is not None else "dp+search:uniform"
    plan = _timed(
        state,
        "solve",
        lambda: make_plan(
            loaded=state.loaded,
            table=state.table,
            scores=scores,
            backend=backend,
            speedup=config.speedup,
            solver=solver,
            seed=config.seed,
            levels=levels,
            solver_label=label,
        ),
    )
    calibration = state.task.calibration if backend_name == "fisher" else None
    pruned = _timed(state, "apply", lambda: backend.apply(state.loaded.adapter, plan, calibration))
    classifier = MeanPoolClassifier(find_bert(pruned)[0], state.task.classifier.head).eval()
    return PlannedModel(plan, search, classifier, selection)


def _select(
    state: RunState,
    config: RunConfig,
    backend: Any,
    scores: ErrorTable,
    budget: float,
    search: solvers.SearchResult,
) -> Selection:
    """Re-rank the search's best plans and the uniform allocation on the calibration documents the
    search did not score (all of them when it scored every one)."""
    tokens = state.task.calibration.tokens
    used = min(config.search_examples, len(tokens))
    held_out = list(range(used, len(tokens))) or list(range(len(tokens)))
    units = state.loaded.adapter.units()
    contenders = [
        Contender(f"search #{rank}", c.levels, c.coefficients, c.loss) for rank, c in enumerate(search.top, start=1)
    ]
    try:
        uniform = solvers.solve_uniform(
            state.table.unit_costs(), scores.unit_errors(), budget, fractions=[u.compression() for u in units]
        )
        contenders.append(Contender("uniform", tuple(uniform.levels), None))
    except solvers.InfeasibleBudgetError:
        pass  # non-monotone costs: even the most compressed uniform plan can miss a budget the DP meets
    loss = CalibrationLoss(
        adapter=state.loaded.adapter,
        head=state.task.classifier.head,
        backend=backend,
        scores=scores,
        tokens=tokens.subset(held_out),
        objective=config.search_objective,
    )
    return select_plan(contenders, loss, examples=len(held_out))


def _search(
    state: RunState,
    config: RunConfig,
    backend: Any,
    scores: ErrorTable,
    budget: float,
    seconds: float,
    *,
    progress: bool,
) -> solvers.SearchResult:
    """SPDY's local search over per-unit weights of the backend's errors, scored by ``CalibrationLoss``."""
    calibration_tokens = state.task.calibration.tokens
    tokens = calibration_tokens.subset(list(range(min(config.search_examples, len(calibration_tokens)))))
    loss = CalibrationLoss(
        adapter=state.loaded.adapter,
        head=state.task.classifier.head,
        backend=backend,
        scores=scores,
        tokens=tokens,
        objective=config.search_objective,
    )
    with progress_bar(round(seconds), f"search ({backend.name})", unit="s", enabled=progress) as bar:
        done = [0]

        def tick(step: solvers.SearchStep) -> None:
            bar.update(max(0, int(step.seconds) - done[0]))
            done[0] = max(done[0], int(step.seconds))

        result: solvers.SearchResult = _timed(
            state,
            "search",
            lambda: solvers.local_search(
                state.table.unit_costs(),
                budget,
                loss,
                curves=scores.unit_errors(),
                seed=config.seed,
                max_evaluations=None,
                max_seconds=seconds,
                on_step=tick,
            ),
        )
    return result


def _write_outputs(folder: Path, state: RunState, planned: PlannedModel, report: dict[str, Any]) -> None:
    """The run's data files, then the readable report and plots drawn from them."""
    from planner import plots

    state.table.save(folder / "table.csv")
    planned.plan.save(folder / "plan.json")
    save_pruned(planned.classifier, folder / "pruned", plan=planned.plan)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if planned.search is not None:
        plots.search_frame(planned.search.history).to_csv(folder / "search_history.csv", index=False)
    render_folder(folder)


def render_folder(folder: str | Path) -> list[Path]:
    """``planner report DIR``: draw the plots and ``report.md`` of a run folder from its files."""
    import pandas as pd

    from planner import plots
    from planner.report_md import render_report

    root = Path(folder)
    for name in ("report.json", "table.csv", "plan.json"):
        if not (root / name).is_file():
            raise PlannerError(
                f"{root} is not a `planner run` folder (no {name}); run `planner run --out {root}` first."
            )
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    table = LatencyTable.load(root / "table.csv")
    plan = Plan.load(root / "plan.json")
    written: list[Path] = []
    written += plots.save_figure(plots.plot_latency(plots.latency_frame(table)), root / "latency_table")
    written += plots.save_figure(plots.plot_allocation(plots.allocation_frame(plan)), root / "allocation")
    points = [
        {
            "label": "dense",
            "predicted_ms": report["dense_predicted_ms"],
            "measured_ms": report["dense_ms"],
            "measured_p10_ms": report["dense_p10_ms"],
            "measured_p90_ms": report["dense_p90_ms"],
        },
        {
            "label": "pruned",
            "predicted_ms": report["predicted_ms"],
            "measured_ms": report["pruned_ms"],
            "measured_p10_ms": report["pruned_p10_ms"],
            "measured_p90_ms": report["pruned_p90_ms"],
        },
    ]
    written += plots.save_figure(plots.plot_prediction(plots.prediction_frame(points)), root / "predicted_vs_measured")
    history = root / "search_history.csv"
    if history.is_file():
        frame = pd.read_csv(history)
        if not frame.empty:
            written += plots.save_figure(plots.plot_search(frame), root / "search_history")
    pareto = root / "pareto.csv"
    if pareto.is_file():
        frame = pd.read_csv(pareto)
        written += plots.save_figure(
            plots.plot_pareto(frame, dense_accuracy=float(frame["dense_accuracy"].iloc[0])), root / "pareto"
        )
    (root / "report.md").write_text(render_report(report), encoding="utf-8")
    written.append(root / "report.md")
    return written


def _measure(
    state: RunState, config: RunConfig, pruned: dict[str, Any], *, progress: bool
) -> dict[str, tuple[float, float, float]]:
    """The dense model and the pruned ones, timed interleaved on the run's runtime and shape."""
    inputs = state.loaded.adapter.example_inputs(config.batch_size, config.seq_len)
    return measure_models(
        {"dense": state.loaded.model, **pruned},
        inputs,
        runtime=config.runtime,
        device=config.device,
        dtype=config.dtype,
        threads=config.threads,
        rounds=config.verify_rounds,
        seed=config.seed,
        progress=progress,
    )


CORRECTION_TOLERANCE = 0.97
"""A run whose measured speedup is below this fraction of the target re-plans (``corrections``)."""


def _attempt(
    planned_for: float, planned: PlannedModel, timing: dict[str, tuple[float, float, float]]
) -> dict[str, float]:
    return {
        "planned_for": planned_for,
        "predicted_speedup": planned.plan.predicted_speedup,
        "measured_speedup": timing["dense"][0] / timing["pruned"][0],
    }


def run_pipeline(
    config: RunConfig,
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run every stage and write ``out``; returns the report (also ``out/report.json``)."""
    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    log("[1/6] profile: latency table (cached per model, device, runtime and shape)")
    state = prepare(config, progress=progress)
    log(f"      {state.table.summary().splitlines()[1].strip()}; max {state.table.max_speedup():.2f}x")
    if config.speedup > state.table.max_speedup():
        best = state.table.max_speedup()
        raise PlannerError(
            f"{config.speedup:g}x is not reachable on this device; the fastest plan gives {best:.2f}x. "
            f"Ask for at most {best:.2f}x."
        )
    log(f"[2/6] score: {config.backend} on {len(state.task.calibration.tokens)} calibration documents")
    log(f"[3/6] solve + [4/6] search ({config.search_seconds:g} s) + [5/6] apply")
    planned = plan_and_apply(
        state,
        config,
        backend_name=config.backend,
        solver=config.solver,
        search_seconds=config.search_seconds,
        progress=progress,
    )
    log("[6/6] verify: dense vs pruned latency interleaved, and test accuracy")
    start = time.perf_counter()
    timing = _measure(state, config, {"pruned": planned.classifier.encoder}, progress=progress)
    attempts = [_attempt(config.speedup, planned, timing)]
    search, selection = planned.search, planned.selection
    replan_solver, replan_coefficients = planned.replan_recipe(config.solver)
    for _ in range(config.corrections):
        measured = attempts[-1]["measured_speedup"]
        if measured >= CORRECTION_TOLERANCE * config.speedup:
            break
        corrected = attempts[-1]["planned_for"] * config.speedup / measured
        if corrected <= attempts[-1]["planned_for"]:
            break  # only ever ask for more speed than the last plan did
        if corrected > state.table.max_speedup():
            log(f"      measured {measured:.2f}x; a corrected plan ({corrected:.2f}x) is beyond this table's maximum")
            break
        log(
            f"      measured {measured:.2f}x < {config.speedup:g}x: the table over-promised; re-planning for "
            f"{corrected:.2f}x and measuring again"
        )
        planned = plan_and_apply(
            state,
            dataclasses.replace(config, speedup=corrected),
            backend_name=config.backend,
            solver=replan_solver,
            search_seconds=0.0,
            progress=progress,
            coefficients=replan_coefficients,
        )
        timing = _measure(state, config, {"pruned": planned.classifier.encoder}, progress=progress)
        attempts.append(_attempt(corrected, planned, timing))
    planned = dataclasses.replace(planned, search=search, selection=selection)
    dense_acc = accuracy(state.task.classifier, state.task.test_tokens)
    pruned_acc = accuracy(planned.classifier, state.task.test_tokens)
    state.seconds["verify"] = time.perf_counter() - start
    report = build_report(config, state, planned, timing, dense_acc, pruned_acc)
    report["attempts"] = attempts
    report["planned_speedup"] = attempts[-1]["planned_for"]
    with atomic_dir(target, overwrite=True) as tmp:
        _write_outputs(tmp, state, planned, report)
    return report


def build_report(
    config: RunConfig,
    state: RunState,
    planned: PlannedModel,
    timing: dict[str, tuple[float, float, float]],
    dense_accuracy: float,
    pruned_accuracy: float,
) -> dict[str, Any]:
    """The ``report.json`` content (keys documented in the README)."""
    plan = planned.plan
    dense, pruned = timing["dense"], timing["pruned"]
    search = planned.search
    return {
        "model": config.model,
        "data": config.data,
        "target_speedup": config.speedup,
        "predicted_speedup": plan.predicted_speedup,
        "measured_speedup": dense[0] / pruned[0],
        "predicted_ms": plan.predicted_ms,
        "dense_predicted_ms": state.table.predict_ms([0] * len(state.table.units())),
        "table_dense_ms": state.table.meta.dense_ms,
        "dense_ms": dense[0],
        "dense_p10_ms": dense[1],
        "dense_p90_ms": dense[2],
        "pruned_ms": pruned[0],
        "pruned_p10_ms": pruned[1],
        "pruned_p90_ms": pruned[2],
        "verify_rounds": config.verify_rounds,
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "stage_seconds": {stage: round(state.seconds.get(stage, 0.0), 2) for stage in STAGES},
        "backend": plan.backend,
        "solver": plan.solver,
        "runtime": config.runtime,
        "device": config.device,
        "device_name": state.table.meta.device_name,
        "dtype": config.dtype,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "threads": state.table.meta.threads,
        "search": None
        if search is None
        else {
            "evaluations": search.evaluations,
            "start_loss": search.start_loss,
            "best_loss": search.loss,
            "stopped": search.stopped,
            "selection": None if planned.selection is None else planned.selection.as_dict(),
        },
        "heads_kept": [c.kept for c in plan.units if c.kind == "attention"],
        "neurons_kept": [c.kept for c in plan.units if c.kind == "ffn"],
        "config": {k: str(v) for k, v in asdict(config).items()},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "planner_version": __version__,
    }


SWEEP_METHODS = (
    ("planner (fisher)", "fisher", "dp", True),
    ("uniform (fisher)", "fisher", "uniform", False),
    ("planner (magnitude)", "magnitude", "dp", True),
)
"""(label, backend, solver, searched) of the plans compared at every target of a sweep."""


def run_sweep(
    config: RunConfig,
    speedups: list[float],
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> Any:
    """The accuracy/speedup trade-off: for each target, the planner (Fisher, DP + search), uniform
    allocation (same backend and table) and the planner with magnitude scores; each applied, all
    timed interleaved with the dense model in one run, and evaluated on the test split.

    Writes ``out/pareto.csv`` and ``out/pareto.png`` (+ .svg); returns the pareto DataFrame.
    """

    from planner import plots

    target = Path(out)
    if target.exists() and not overwrite:
        raise PlannerError(f"{target} already exists; choose another --out or pass --overwrite.")
    if not speedups or any(not s > 1.0 for s in speedups):
        raise PlannerError(f"The 'speedups' parameter must list targets > 1.0. Got {speedups!r} instead.")
    state = prepare(config, progress=progress)
    best = state.table.max_speedup()
    too_far = [s for s in speedups if s > best]
    if too_far:
        raise PlannerError(
            f"targets {too_far} are not reachable on this device; the fastest plan gives {best:.2f}x. "
            f"Ask for at most {best:.2f}x."
        )
    models: dict[str, MeanPoolClassifier] = {}
    rows: list[dict[str, Any]] = []
    for speedup in speedups:
        per_target = dataclasses.replace(config, speedup=speedup)
        for label, backend, solver, searched in SWEEP_METHODS:
            log(f"{speedup:g}x: {label}")
            planned = plan_and_apply(
                state,
                per_target,
                backend_name=backend,
                solver=solver,
                search_seconds=config.search_seconds if searched else 0.0,
            )
            key = f"{label}@{speedup:g}"
            models[key] = planned.classifier
            rows.append(
                {
                    "method": label,
                    "target_speedup": speedup,
                    "predicted_speedup": planned.plan.predicted_speedup,
                    "solver": planned.plan.solver,
                    "key": key,
                    "heads_kept": [c.kept for c in planned.plan.units if c.kind == "attention"],
                    "neurons_kept": [c.kept for c in planned.plan.units if c.kind == "ffn"],
                }
            )
    log("verify: every pruned model timed interleaved with the dense one; test accuracy")
    timing = _measure(state, config, {k: m.encoder for k, m in models.items()}, progress=progress)
    dense_acc = accuracy(state.task.classifier, state.task.test_tokens)
    for row in rows:
        key = row.pop("key")
        row["measured_speedup"] = timing["dense"][0] / timing[key][0]
        row["pruned_ms"] = timing[key][0]
        row["dense_ms"] = timing["dense"][0]
        row["accuracy"] = accuracy(models[key], state.task.test_tokens)
        row["dense_accuracy"] = dense_acc
    frame = plots.pareto_frame(rows)
    with atomic_dir(target, overwrite=True) as tmp:
        frame.to_csv(tmp / "pareto.csv", index=False)
        plots.save_figure(plots.plot_pareto(frame, dense_accuracy=dense_acc), tmp / "pareto")
    return frame
