"""The quality verdict of a run: speed and quality together, and the exit code that says it.

The limit itself (``QualityLimit``, ``--max-loss``) is a setting: ``planner.config.quality``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from planner.config.quality import QualityLimit

QUALITY_LOST_EXIT = 3
"""Exit code of ``planner run`` when the delivered model lost more quality than allowed (the guard
or ``--max-loss``), or when no plan within the limit gives a speedup: scripts can tell it from bad
input (2) and from a crash (1)."""


def verdict(*, speed_met: bool, quality_met: bool) -> str:
    """The report's one-line verdict: speed and quality together (a gutted model is never "met")."""
    if speed_met and quality_met:
        return "met"
    if speed_met:
        return "speed met, quality lost"
    if quality_met:
        return "missed"
    return "missed, quality lost"


@dataclass(frozen=True)
class GuardCheck:
    """A model's quality loss on the guard split (examples no stage fitted or tuned on), in the limit's
    unit (accuracy points, or a relative perplexity increase), with its paired 95% bootstrap interval.

    A plan is within the limit only when the interval's upper end is (``within``): a point estimate
    inside the limit on a few hundred examples is not a promise.
    """

    loss: float
    low: float
    high: float
    examples: int
    limit: float

    @property
    def within(self) -> bool:
        return bool(math.isfinite(self.high) and self.high <= self.limit + 1e-9)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    @property
    def resolves(self) -> bool:
        """The split is large enough to tell this model within the limit: its interval is narrower than
        the limit on each side (a wider one cannot lie within the limit whatever the estimate)."""
        return self.half_width < self.limit

    def examples_needed(self) -> int:
        """Guard examples for an interval half as wide as the limit (widths shrink as 1/sqrt(n))."""
        if self.half_width <= 0:
            return self.examples
        return max(self.examples, math.ceil(self.examples * (2.0 * self.half_width / self.limit) ** 2))

    def text(self, limit: QualityLimit) -> str:
        """E.g. "1.95 points [0.98, 2.93] on 512 guard examples" or "+146.8% perplexity [+134.0%, +164.0%]
        on 64 guard examples": the estimate and both ends in the limit's unit."""
        amount = limit.amount
        interval = f"[{amount(self.low)}, {amount(self.high)}]"
        return f"{amount(self.loss)} {limit.unit} {interval} on {self.examples} guard examples"
