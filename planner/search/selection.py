"""The final pick of ``planner run``: the search's best few plans and the uniform allocation, re-ranked
on calibration documents the search did not score.

The search keeps the candidate with the lowest loss on a small sample (64 documents by default), and
that minimum is optimistic: on MiniLM/BBC at 2x the searched plan's KL was 0.018 on its 64 documents
but 0.109 on 256. Re-ranking a handful of contenders on held-out documents costs a few evaluations and
means the plan is never worse, on that data, than the uniform allocation with the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One plan offered to the final pick.

    Attributes:
        source: where it came from: "search #k" (k-th best of the search) or "uniform".
        levels: one level index per unit.
        coefficients: the search's per-unit error weights that produce it (None for uniform); a
            re-plan for another budget reuses them.
        search_loss: loss on the search's documents (None if the search did not score it).
        loss: loss on the selection documents (NaN until evaluated).
        admissible: False when the plan lost more quality than ``--max-loss`` allows on the
            selection documents (never chosen while another contender is admissible).
    """

    source: str
    levels: tuple[int, ...]
    coefficients: tuple[float, ...] | None
    search_loss: float | None = None
    loss: float = math.nan
    admissible: bool = True


@dataclass(frozen=True)
class Selection:
    """Every contender with its held-out loss; ``chosen`` is the admissible one with the lowest (the
    lowest of all when none is admissible)."""

    contenders: tuple[Contender, ...]
    examples: int

    @property
    def chosen(self) -> Contender:
        pool = [c for c in self.contenders if c.admissible] or list(self.contenders)
        return min(pool, key=lambda c: c.loss)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for ``report.json``."""
        return {
            "chosen": self.chosen.source,
            "examples": self.examples,
            "contenders": [{"source": c.source, "search_loss": c.search_loss, "loss": c.loss} for c in self.contenders],
        }


def select_plan(
    contenders: Sequence[Contender],
    evaluate: Callable[[tuple[int, ...]], float],
    *,
    examples: int,
    admissible: Callable[[tuple[int, ...]], bool] | None = None,
) -> Selection:
    """Evaluate each distinct level choice once and return them all with their losses.

    Args:
        contenders: at least one; identical levels are scored once (the first source is kept).
        evaluate: levels -> loss on the selection documents (finite).
        examples: how many documents ``evaluate`` uses (recorded in the report).
        admissible: levels -> whether the plan keeps the quality the user asked for (``--max-loss``).
    """
    if not contenders:
        raise ValueError("select_plan needs at least one contender.")
    scored: dict[tuple[int, ...], Contender] = {}
    for contender in contenders:
        if contender.levels in scored:
            continue
        loss = float(evaluate(contender.levels))
        if not math.isfinite(loss):
            raise ValueError(f"evaluate() returned {loss} for {contender.source}; it must return a finite loss.")
        ok = True if admissible is None else bool(admissible(contender.levels))
        scored[contender.levels] = replace(contender, loss=loss, admissible=ok)
    return Selection(tuple(scored.values()), examples)
