"""The final pick of ``planner run``: the search's best few plans and the uniform allocation, re-ranked
on calibration documents the search did not score.

The search keeps the candidate with the lowest loss on a small sample (64 documents by default), and
that minimum is optimistic: on MiniLM/BBC at 2x the searched plan's KL was 0.018 on its 64 documents
but 0.109 on 256. Re-ranking a handful of contenders on held-out documents costs a few evaluations and
means the plan is never worse, on that data, than the uniform allocation with the same budget.

Even the held-out minimum is a noisy pick among several contenders: on the default MiniLM run a
lopsided searched plan that edged out uniform there lost 3.38 test points where uniform lost 0.23.
So when per-example losses are given, the lowest contender replaces the uniform allocation only if
it beats it with confidence: the paired bootstrap interval of its held-out loss minus uniform's lies
wholly below zero (``planner.tasks.compare``). Otherwise uniform is kept, and the selection says so.

That test on the pick's examples alone is weak where the contenders are close: on MiniLM/BBC at 2x the
plain DP plan was the lowest on the 128 held-out examples (KL 0.092 vs uniform's 0.111) but its
interval reached above zero, so uniform was kept, and on the test articles the DP plan's KL was 29%
lower than uniform's. The DP plan and uniform are built from the scores alone (``PRIORS``): where the
search did not rank them among its best, its own sample is held out for them too, and their paired test
uses those examples as well (``evidence``; 256 in all there, a confident win). A searched plan is
tested on the pick's examples only: its search loss is the optimistic minimum of many.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from planner.tasks.compare import PairedDifference, paired_mean_difference

BASELINE = "uniform"
"""The contender a searched plan must beat with confidence."""

PRIORS = (BASELINE, "dp")
"""Contenders built from the scores alone, never chosen on a calibration sample: the uniform allocation
and the plain DP plan."""


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
        scoring: the way its units were filled for ``loss`` (``planner.stages.search.scoring``; None
            when the pick did not say).
    """

    source: str
    levels: tuple[int, ...]
    coefficients: tuple[float, ...] | None
    search_loss: float | None = None
    loss: float = math.nan
    admissible: bool = True
    scoring: str | None = None


@dataclass(frozen=True)
class Selection:
    """Every contender with its held-out loss, and the choice.

    ``chosen`` is the admissible contender with the lowest loss (the lowest of all when none is
    admissible), unless it did not beat the uniform allocation with confidence (``versus_uniform``:
    its paired difference to uniform, on ``tested`` examples; ``kept_uniform``: True when uniform was kept
    for that reason).
    """

    contenders: tuple[Contender, ...]
    examples: int
    versus_uniform: PairedDifference | None = None
    kept_uniform: bool = False
    tested: int | None = None

    @property
    def lowest(self) -> Contender:
        pool = [c for c in self.contenders if c.admissible] or list(self.contenders)
        return min(pool, key=lambda c: c.loss)

    @property
    def chosen(self) -> Contender:
        if self.kept_uniform:
            return next(c for c in self.contenders if c.source == BASELINE)
        return self.lowest

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for ``report.json``."""
        out: dict[str, Any] = {
            "chosen": self.chosen.source,
            "examples": self.examples,
            "contenders": [
                {"source": c.source, "search_loss": c.search_loss, "loss": c.loss, "scoring": c.scoring}
                for c in self.contenders
            ],
        }
        if self.versus_uniform is not None:
            d = self.versus_uniform
            out["versus_uniform"] = {
                "source": self.lowest.source,
                "difference": d.difference,
                "low": d.low,
                "high": d.high,
                "kept_uniform": self.kept_uniform,
                "examples": self.tested,
            }
        return out


def select_plan(
    contenders: Sequence[Contender],
    evaluate: Callable[[tuple[int, ...]], float | np.ndarray],
    *,
    examples: int,
    admissible: Callable[[tuple[int, ...]], bool] | None = None,
    evidence: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> Selection:
    """Evaluate each distinct level choice once and return them all with their losses.

    Args:
        contenders: at least one; identical levels are scored once (the first source is kept).
        evaluate: levels -> loss on the selection documents (finite), or the (n,) per-example losses,
            which lets a searched plan replace uniform only when it wins with confidence (module docstring).
        examples: how many documents ``evaluate`` uses (recorded in the report).
        admissible: levels -> whether the plan keeps the quality the user asked for (``--max-loss``).
        evidence: levels -> (m,) per-example losses on examples apart from ``evaluate``'s that no
            contender was chosen on but searched ones (the search sample); when the lowest contender and
            uniform are both ``PRIORS`` whose levels no contender with a search loss shares, their paired
            test adds these examples (module docstring).
    """
    if not contenders:
        raise ValueError("select_plan needs at least one contender.")
    scored: dict[tuple[int, ...], Contender] = {}
    per_example: dict[str, np.ndarray] = {}
    for contender in contenders:
        if contender.levels in scored:
            continue
        value = evaluate(contender.levels)
        loss = float(np.mean(value))
        if not math.isfinite(loss):
            raise ValueError(f"evaluate() returned {loss} for {contender.source}; it must return a finite loss.")
        if np.ndim(value) == 1:
            per_example[contender.source] = np.asarray(value, dtype=float)
        ok = True if admissible is None else bool(admissible(contender.levels))
        scored[contender.levels] = replace(contender, loss=loss, admissible=ok)
    selection = Selection(tuple(scored.values()), examples)
    lowest, uniform = selection.lowest, next((c for c in selection.contenders if c.source == BASELINE), None)
    if uniform is None or lowest is uniform or lowest.source not in per_example or BASELINE not in per_example:
        return selection
    a, b = per_example[lowest.source], per_example[BASELINE]
    ranked = {c.levels for c in contenders if c.search_loss is not None}
    unranked_priors = {lowest.source, BASELINE} <= set(PRIORS) and not {lowest.levels, uniform.levels} & ranked
    if evidence is not None and unranked_priors:
        a, b = np.concatenate([a, evidence(lowest.levels)]), np.concatenate([b, evidence(uniform.levels)])
    versus = paired_mean_difference(a, b)
    keep = uniform.admissible and versus.high >= 0.0
    return replace(selection, versus_uniform=versus, kept_uniform=keep, tested=len(a))
