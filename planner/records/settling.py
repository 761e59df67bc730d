"""``DenseSettling``: the dense time a run plans with, settled against whole models measured near the
target just before planning (the record of ``planner.stages.profile.settle``).

A predicted speedup is ``dense_ms / g(sum)``: its numerator is one whole-model measurement taken
while profiling, its denominator a curve through several. On a noisy machine, or when the table was
measured in another process, the dense time can sit 5-10% off relative to the curve, and every
first plan then misses (or overshoots) by that much. So before planning, the dense model and the
plans the solver would make at the target (uniform and plain DP) are timed paired and interleaved,
as verification times them; the ratio measured / predicted speedup of those probes rescales the
dense time the run plans with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FACTOR_LIMITS = (0.75, 1.33)
"""A settling factor outside these bounds is clipped: a table that far off is re-profiled, not patched."""


@dataclass(frozen=True)
class Probe:
    """One whole model timed against the dense one before planning.

    Attributes:
        name: "uniform" or "dp" (the solver that planned its levels at the target).
        predicted: its speedup predicted by the table as profiled (dense / g(sum)).
        measured, low, high: its measured speedup with the 95% interval (paired rounds).
    """

    name: str
    predicted: float
    measured: float
    low: float
    high: float

    @property
    def factor(self) -> float:
        """measured / predicted (> 1: the table was pessimistic here)."""
        return self.measured / self.predicted


@dataclass(frozen=True)
class DenseSettling:
    """The dense time as profiled and as settled (ms), the probes, and whether the result was used.

    Attributes:
        table_dense_ms: the table's dense latency (p10, as profiled).
        dense_ms: the dense latency the run plans with (``table_dense_ms`` x ``factor``).
        factor: geometric mean of the probes' measured / predicted speedups, clipped to
            ``FACTOR_LIMITS``; 1.0 when not applied.
        applied: False when the probes ran on a busy machine (their ratios cannot be trusted) or no
            probe could be built; ``reason`` says why.
        rounds: paired rounds behind the probes.
    """

    table_dense_ms: float
    dense_ms: float
    factor: float
    applied: bool
    probes: tuple[Probe, ...]
    rounds: int
    reason: str = ""

    @classmethod
    def from_probes(cls, table_dense_ms: float, probes: tuple[Probe, ...], *, rounds: int, busy: bool) -> DenseSettling:
        """Combine ``probes`` (see the class docstring); a busy or empty probe set leaves the dense time as is."""
        if busy or not probes:
            why = "the machine was busy while the probes ran" if busy else "no probe model could be built"
            return cls(table_dense_ms, table_dense_ms, 1.0, False, probes, rounds, why)
        raw = math.exp(sum(math.log(p.factor) for p in probes) / len(probes))
        factor = min(max(raw, FACTOR_LIMITS[0]), FACTOR_LIMITS[1])
        reason = "" if factor == raw else f"factor {raw:.3f} clipped to {factor:.3f}: re-profile this table"
        return cls(table_dense_ms, table_dense_ms * factor, factor, True, probes, rounds, reason)

    def text(self) -> str:
        """E.g. "dense time settled: 706.0 -> 662.3 ms (x0.938; uniform 2.00x -> 1.88x, dp 2.00x -> 1.87x measured)"."""
        probes = ", ".join(f"{p.name} {p.predicted:.2f}x -> {p.measured:.2f}x" for p in self.probes)
        if not self.applied:
            return f"dense time not settled ({self.reason}; probes: {probes or 'none'})"
        line = (
            f"dense time settled: {self.table_dense_ms:.1f} -> {self.dense_ms:.1f} ms (x{self.factor:.3f}; "
            f"{probes} measured, {self.rounds} paired rounds)"
        )
        return line + (f"; {self.reason}" if self.reason else "")

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "probes": [dataclasses.asdict(p) for p in self.probes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DenseSettling:
        """The record back from ``as_dict`` (e.g. ``report.json``'s ``dense_settling``)."""
        return cls(**{**data, "probes": tuple(Probe(**p) for p in data["probes"])})
