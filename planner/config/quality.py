"""The quality half of a promise, as set by the user: how much of the task a pruned model may lose.

A speedup bought by gutting the model is not a kept promise (on an H100 in eager mode a "met" 2x
MiniLM plan fell from 96.85% to 32.21% accuracy: ``../shared/reference/gpu.md``). Every run checks
the held-out metric against a limit:

- ``--max-loss`` given: accuracy points for classification (``1pt`` or ``1``), a relative perplexity
  increase for causal LMs (``20%`` or ``20``);
- not given: the guard, 5 points or +50% perplexity.
Either limit steers the final pick and the corrections the same way: a plan is within it when the
upper end of its loss's paired 95% interval on the guard split (examples no stage fits or tunes on)
is. The verdict also checks the test set; a run beyond the limit ends with a warning and exit code
``planner.records.quality.QUALITY_LOST_EXIT`` (3; bad input is 2). ``check_guard_size`` refuses,
before any work, a limit the guard split cannot check.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from planner.errors import PlannerError

GUARD_POINTS = 5.0
"""Accuracy points a run may lose before it is reported as "quality lost" (no ``--max-loss``)."""
GUARD_RELATIVE = 0.5
"""Relative perplexity increase (+50%) a run may cause before it is "quality lost" (no ``--max-loss``)."""
MAX_POINTS = 100.0
MAX_PERCENT = 10_000.0


@dataclass(frozen=True)
class QualityLimit:
    """The loss a plan may cause.

    Attributes:
        kind: "points" (accuracy points lost, classification) or "relative" (perplexity increase as a
            fraction of the dense model's, causal LMs).
        value: the most allowed, in that unit (points, or a fraction: 0.2 = +20%).
        explicit: True when the user set it (``--max-loss``), False for the default guard.
    """

    kind: str
    value: float
    explicit: bool

    def describe(self) -> str:
        """E.g. "1 accuracy point" or "+20% perplexity"."""
        if self.kind == "points":
            return f"{self.value:g} accuracy point{'s' if self.value != 1 else ''}"
        return f"+{100 * self.value:g}% perplexity"

    def loss(self, dense: float, pruned: float) -> float:
        """The loss in this limit's unit: points (accuracies in [0, 1]) or relative perplexity increase."""
        if self.kind == "points":
            return 100.0 * (dense - pruned)
        return pruned / dense - 1.0 if dense > 0 else math.inf

    def within(self, dense: float, pruned: float) -> bool:
        """True when ``pruned`` lost at most the limit against ``dense`` (a NaN metric never is)."""
        loss = self.loss(dense, pruned)
        return bool(math.isfinite(loss) and loss <= self.value + 1e-9)

    @property
    def unit(self) -> str:
        """The loss's unit as shown after an amount: "points" or "perplexity"."""
        return "points" if self.kind == "points" else "perplexity"

    def amount(self, loss: float) -> str:
        """A loss (or an end of its interval) in this limit's unit, without the unit: "1.95" or "+146.8%"."""
        return f"{loss:.2f}" if self.kind == "points" else f"{100 * loss:+.1f}%"

    def describe_loss(self, loss: float) -> str:
        """E.g. "1.95 points" or "+146.8% perplexity"."""
        return f"{self.amount(loss)} {self.unit}"


def limit_kind(metric: str) -> str:
    """The limit's unit for a task metric: "points" for accuracy, "relative" for perplexity."""
    return "relative" if metric == "perplexity" else "points"


def parse_max_loss(text: str | None, metric: str) -> QualityLimit:
    """``--max-loss`` for a task whose held-out metric is ``metric`` ("accuracy" or "perplexity").

    Accepted: ``1pt`` / ``1 points`` (accuracy points), ``20%`` (relative perplexity increase), or a
    bare number in the task's unit (points for accuracy, percent for perplexity). None gives the
    default guard. Raises ``PlannerError`` naming the problem and the fix.
    """
    kind = limit_kind(metric)
    if text is None:
        return QualityLimit(kind, GUARD_POINTS if kind == "points" else GUARD_RELATIVE, explicit=False)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(pt|pts|point|points|%)?\s*", str(text))
    example = "--max-loss 1pt (accuracy points)" if kind == "points" else "--max-loss 20% (perplexity increase)"
    if match is None:
        raise PlannerError(
            f"The 'max_loss' parameter must be a number with an optional unit (pt or %). Got {text!r} instead; "
            f"e.g. {example}."
        )
    number, unit = float(match.group(1)), match.group(2)
    given = "points" if unit in ("pt", "pts", "point", "points") else "relative" if unit == "%" else kind
    if given != kind:
        what = "accuracy points" if kind == "points" else "a relative perplexity increase in %"
        raise PlannerError(
            f"--max-loss {text.strip()} does not fit this task: its metric is {metric}, limited in {what}; "
            f"use {example}."
        )
    if kind == "points":
        if not 0 < number <= MAX_POINTS:
            raise PlannerError(f"The 'max_loss' parameter must be > 0 and <= 100 points. Got {text!r} instead.")
        return QualityLimit("points", number, explicit=True)
    if not 0 < number <= MAX_PERCENT:
        raise PlannerError(f"The 'max_loss' parameter must be > 0% and <= 10000%. Got {text!r} instead.")
    return QualityLimit("relative", number / 100.0, explicit=True)


RESOLUTION_EXAMPLES = 4
"""A guard split resolves an accuracy limit when a model that answers this many of its documents
differently from the dense one (and loses nothing on balance) is still within it: the paired 95%
interval of such a model reaches about 1.96 x sqrt(4) = 3.9 documents' worth of points."""
MIN_GUARD_WINDOWS = 8
"""The fewest guard windows a perplexity limit is checked on."""


def finest_points(examples: int) -> float:
    """The smallest accuracy limit (points) ``examples`` guard documents resolve (``RESOLUTION_EXAMPLES``)."""
    return 100.0 * 1.96 * math.sqrt(RESOLUTION_EXAMPLES) / examples if examples > 0 else math.inf


def check_guard_size(limit: QualityLimit, examples: int) -> None:
    """Refuse, before any work, a ``--max-loss`` the guard split cannot check: an empty split, or an
    accuracy limit finer than ``examples`` documents resolve (perplexity: fewer than ``MIN_GUARD_WINDOWS``).

    Raises:
        PlannerError: naming the problem and the fix.
    """
    unit = "documents" if limit.kind == "points" else "windows"
    if examples == 0:
        raise PlannerError(
            f"--max-loss {limit.describe()} is checked on a guard split of training {unit} outside the calibration "
            "set, and the data has none left; give more data, lower --calibration-size, or drop --max-loss."
        )
    if limit.kind == "points" and limit.value < finest_points(examples):
        needed = math.ceil(100.0 * 1.96 * math.sqrt(RESOLUTION_EXAMPLES) / limit.value)
        raise PlannerError(
            f"--max-loss {limit.describe()} is finer than {examples} guard documents can resolve (the finest is "
            f"{finest_points(examples):.2f} points); use --guard-size {needed} (with enough data) or a limit of at "
            f"least {finest_points(examples):.2f} points."
        )
    if limit.kind == "relative" and examples < MIN_GUARD_WINDOWS:
        raise PlannerError(
            f"--max-loss {limit.describe()} needs at least {MIN_GUARD_WINDOWS} guard windows; the data leaves "
            f"{examples}. Give more text, lower --calibration-size or --seq-len, or drop --max-loss."
        )
