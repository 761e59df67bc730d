"""``Report``: what one ``planner run`` promised, measured and kept, as a frozen record.

Saved as ``report.json`` (schema ``planner/schemas/report.schema.json``, shipped in the package) and
read back by ``report.md``, the CLI summary and ``planner report``. Speedups are paired estimates
(median of per-round ratios) with their confidence interval; the task metric is reported for the
dense and the pruned model on held-out data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from profilers.atomic import atomic_write_text

REPORT_SCHEMA_VERSION = 4
"""Version 2 added the execution mode, the quality check (``quality``) and the ``verdict``; version 3
each attempt's speed status and guard-split loss, and the delivered model's guard-split estimate;
version 4 each attempt's ``recipe`` (how the backend applied the plan)."""


@dataclass(frozen=True)
class Attempt:
    """One plan applied and measured: what it was planned for, predicted and measured (paired)."""

    planned_for: float
    predicted_speedup: float
    measured_speedup: float
    measured_low: float
    measured_high: float
    status: str | None = None
    """"short", "met" or "overshoots" (``planner.records.verification.speed_status``)."""
    busy: bool = False
    """Measured while other processes kept the machine busy: it moved no plan."""
    guard_loss: float | None = None
    """Loss on the guard split in the limit's unit, with its paired 95% interval (None: no guard split)."""
    guard_low: float | None = None
    guard_high: float | None = None
    recipe: str | None = None
    """How the backend applied the plan, when it chose among recipes by held-out KL (None: its only one)."""


@dataclass(frozen=True)
class MetricSummary:
    """The task's held-out metric for the dense and the pruned model.

    Attributes:
        name: "accuracy" or "perplexity".
        examples: test documents or windows; ``tokens``: tokens they hold (predicted tokens for LMs).
    """

    name: str
    dense: float
    pruned: float
    higher_is_better: bool
    examples: int
    tokens: int

    @property
    def change(self) -> float:
        """pruned - dense (points of accuracy x 100 are up to the reader)."""
        return self.pruned - self.dense


@dataclass(frozen=True)
class Contender:
    """One plan offered to the final pick, with its loss on the search's and the selection's data."""

    source: str
    search_loss: float | None
    loss: float
    scoring: str | None = None
    """How its units were filled for ``loss`` (``planner.stages.search.scoring``; None in older reports)."""


@dataclass(frozen=True)
class SelectionSummary:
    """The final pick: contenders re-ranked on calibration examples the search did not score."""

    chosen: str
    examples: int
    contenders: tuple[Contender, ...]
    versus_uniform: dict[str, Any] | None = None
    """The lowest contender's held-out loss minus uniform's, with its paired 95% interval (``difference``,
    ``low``, ``high``, ``source``), the ``examples`` it was tested on (the pick's, and the search's for
    two priors, ``planner.stages.search.selection``), and ``kept_uniform``: uniform was kept because that
    interval did not lie below zero."""


def executor_text(record: Mapping[str, Any]) -> str:
    """A search's executor record (``SearchSummary.executor``) as a sentence fragment."""
    retried = f", {record['retried']} retried after a worker died" if record.get("retried") else ""
    return (
        f"{record['evaluations']} evaluations on {record['workers']} {record['kind']} worker(s), "
        f"{float(record['evaluations_per_second']):.2f}/s{retried}"
    )


SEARCH_OVERRUN = 2.0
"""A search loop longer than this multiple of ``--search-seconds`` gets its reason in the report."""


@dataclass(frozen=True)
class SearchSummary:
    """What the search did: evaluations, loss at the start (plain DP / best seed) and best, why it
    stopped, and where its time went."""

    method: str
    evaluations: int
    start_loss: float
    best_loss: float
    stopped: str
    seconds: float
    selection: SelectionSummary | None = None
    generations: int | None = None
    """Generations of the evolution (None for SPDY's search)."""
    cost: dict[str, float] | None = None
    """Evaluations, examples scored, seconds building candidates and in forward passes, build share."""
    executor: dict[str, float | str] | None = None
    """Where candidates were evaluated: kind ("local", "ray"), workers, evaluations, evaluations per
    second, and evaluations retried after a worker died."""
    scoring: dict[str, Any] | None = None
    """``chosen``: the scoring the search ran under (``planner.stages.search.scoring``); ``seed_losses``:
    scoring -> the seeds' lowest loss under it (None: the backend has one scoring). None in older reports."""

    @property
    def executor_text(self) -> str | None:
        """``executor`` as a sentence fragment for logs and ``report.md`` (None without one)."""
        return None if self.executor is None else executor_text(self.executor)

    @property
    def time_text(self) -> str | None:
        """Where the stage's seconds went (the search, the final pick), and, when the search ran well past
        ``--search-seconds``, why and what to change; None for a report written before this was recorded."""
        cost = self.cost or {}
        if "search_seconds" not in cost or "pick_seconds" not in cost:
            return None
        loop = cost["search_seconds"]
        text = f"the search {loop:.0f} s, the final pick {cost['pick_seconds']:.0f} s"
        budget = cost.get("budget_seconds")
        if budget is not None and loop > SEARCH_OVERRUN * budget:
            text += (
                f"; --search-seconds {budget:g} is checked between rounds of evaluations, and {self.evaluations} "
                f"took {loop:.0f} s on this model: fewer --search-examples make each one cheaper"
            )
        return text


@dataclass(frozen=True)
class QualitySummary:
    """The held-out metric's loss against the limit (``planner.config.quality``).

    Attributes:
        kind: "points" (accuracy points lost) or "relative" (perplexity increase, a fraction).
        limit: the most allowed, in that unit (``--max-loss`` or the default guard).
        loss: what the delivered model lost on the test set, in that unit.
        met: ``loss <= limit``.
        explicit: True when the limit came from ``--max-loss``.
    """

    kind: str
    limit: float
    loss: float
    met: bool
    explicit: bool
    guard_loss: float | None = None
    """The delivered model's loss on the guard split (examples no stage fitted or tuned on), with its
    paired 95% interval and the split's size; None without a guard split."""
    guard_low: float | None = None
    guard_high: float | None = None
    guard_examples: int | None = None
    guard_within: bool | None = None
    """The interval's upper end is within the limit: the rule every plan of the run was kept by."""
    speedup_within: bool | None = None
    """When the limit shaped the run (some attempt lost more): False when no plan within it gave a
    speedup one can be sure of (the delivered one's interval reaches 1x, or none was within); the run
    then exits 3 like a lost quality. None when the limit did not shape the run."""


@dataclass(frozen=True)
class Report:
    """One run's promise and its measurement (keys of ``report.json``; times in ms, seconds in s)."""

    model: str
    data: str
    task: str
    target_speedup: float
    predicted_speedup: float
    measured_speedup: float
    speedup_low: float
    speedup_high: float
    target_met: bool
    predicted_ms: float
    dense_predicted_ms: float
    table_dense_ms: float
    dense_ms: float
    dense_p10_ms: float
    dense_p90_ms: float
    pruned_ms: float
    pruned_p10_ms: float
    pruned_p90_ms: float
    verify_rounds: int
    metric: MetricSummary
    stage_seconds: Mapping[str, float]
    backend: str
    solver: str
    runtime: str
    device: str
    device_name: str
    dtype: str
    batch_size: int
    seq_len: int
    phase: str
    generate_tokens: int
    threads: int
    search: SearchSummary | None
    attempts: tuple[Attempt, ...]
    planned_speedup: float
    heads_kept: tuple[int, ...]
    neurons_kept: tuple[int, ...]
    groups_kept: tuple[int, ...]
    config: Mapping[str, str]
    created: str
    planner_version: str
    execution: str
    quality: QualitySummary
    verdict: str
    headroom: Mapping[str, Any] | None
    """The dense model timed the other way to deploy here (``planner.stages.profile.headroom``), or None."""
    dense_settling: Mapping[str, Any] | None = None
    """The dense time the run planned with, settled against paired probes before planning
    (``planner.records.settling.DenseSettling`` as a dict), or None."""
    recovery: Mapping[str, Any] | None = None
    """Recovery by distillation (``planner.stages.recover.RecoveryLog`` as a dict, plus ``pruned_metric``: the
    held-out metric before recovery; ``metric.pruned`` is then the recovered model's), or None."""
    """"met", "speed met, quality lost", "missed" or "missed, quality lost" (``planner.records.quality.verdict``)."""
    notes: tuple[str, ...] = ()
    schema_version: int = REPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content; tuples become lists, nested records objects."""
        data = dataclasses.asdict(self)
        data["stage_seconds"] = dict(self.stage_seconds)
        data["config"] = dict(self.config)
        return data

    def save(self, path: str | Path) -> Path:
        """Write ``report.json`` atomically."""
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a ``report.json`` and rebuild the record (checking the schema version and fields)."""
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PlannerError(f"{source} is not a readable report ({exc}); re-run `planner run`.") from None
        return report_from_dict(data, source=str(source))


def report_from_dict(data: Any, *, source: str = "report") -> Report:
    """Build a ``Report`` from decoded JSON (nested objects become their records)."""
    if not isinstance(data, dict) or data.get("schema_version") != REPORT_SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise PlannerError(
            f"{source} has report schema version {version!r}; this planner reads {REPORT_SCHEMA_VERSION}. "
            "Re-run `planner run`."
        )
    names = {f.name for f in dataclasses.fields(Report)}
    optional = {f.name for f in dataclasses.fields(Report) if f.default is not dataclasses.MISSING}
    missing = sorted(names - set(data) - optional)
    if missing:
        raise PlannerError(f"{source} lacks report fields {missing}; re-run `planner run`.")
    values = {k: data[k] for k in names if k in data}
    values["metric"] = MetricSummary(**data["metric"])
    values["quality"] = QualitySummary(**data["quality"])
    values["attempts"] = tuple(Attempt(**a) for a in data["attempts"])
    for key in ("heads_kept", "neurons_kept", "groups_kept", "notes"):
        if key in values:
            values[key] = tuple(values[key])
    search = data["search"]
    if search is not None:
        selection = search.get("selection")
        if selection is not None:
            selection = SelectionSummary(
                selection["chosen"],
                selection["examples"],
                tuple(Contender(**c) for c in selection["contenders"]),
                selection.get("versus_uniform"),
            )
        search = SearchSummary(**{**search, "selection": selection})
    values["search"] = search
    return Report(**values)


def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``, as shipped in the package."""
    text = resources.files("planner").joinpath("schemas/report.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "REPORT_SCHEMA_VERSION",
    "Attempt",
    "Contender",
    "MetricSummary",
    "QualitySummary",
    "Report",
    "SearchSummary",
    "SelectionSummary",
    "report_from_dict",
    "report_schema",
]
