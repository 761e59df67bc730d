"""``Verification``: end-to-end latencies of the dense model and pruned ones, measured interleaved.

Every model is timed once per round, in a fresh random order, in one process on one runtime; so the
samples of different models with the same round index were taken moments apart, under the same
load. A speedup is the ratio of the two models' 10th-percentile latencies over the same rounds (the
estimator latency tables plan with: a promise is verified in the units it was made in), with a
95% interval from resampling whole rounds (paired: a round keeps both models' samples). The median
of the per-round ratios is reported beside it (``median_speedup``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profilers.timing import ESTIMATOR_QUANTILE, median_interval

TARGET_TOLERANCE = 0.03
"""A promise of X x is kept when the measured speedup is at least (1 - 0.03) X."""
OVERSHOOT_TOLERANCE = 0.10
"""A plan overshoots when it measures above (1 + 0.10) X: it bought speed nobody asked for with quality."""


def speed_status(measured_speedup: float, target_speedup: float) -> str:
    """The one rule for a measured speedup against its target, shared by the corrections, the verdict and
    the report: "short" below (1 - ``TARGET_TOLERANCE``) x target, "overshoots" above (1 +
    ``OVERSHOOT_TOLERANCE``) x target, else "met". The point estimate decides; an interval that straddles
    a boundary is first narrowed by more rounds (``undecided``)."""
    if measured_speedup < (1.0 - TARGET_TOLERANCE) * target_speedup:
        return "short"
    if measured_speedup > (1.0 + OVERSHOOT_TOLERANCE) * target_speedup:
        return "overshoots"
    return "met"


def target_met(measured_speedup: float, target_speedup: float) -> bool:
    """The promise of speed is kept: not "short" (an overshoot keeps it too, at a cost in quality)."""
    return speed_status(measured_speedup, target_speedup) != "short"


def undecided(low: float, high: float, target_speedup: float) -> bool:
    """True when the 95% interval [low, high] straddles one of ``speed_status``'s boundaries: the point
    estimate's side of it is not yet known with confidence (measure more rounds before deciding)."""
    bounds = ((1.0 - TARGET_TOLERANCE) * target_speedup, (1.0 + OVERSHOOT_TOLERANCE) * target_speedup)
    return any(low < bound < high for bound in bounds)


@dataclass(frozen=True)
class ModelTiming:
    """One model's end-to-end latency samples (ms), one per round, and their summary."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    samples_ms: tuple[float, ...]

    @property
    def rounds(self) -> int:
        return len(self.samples_ms)


@dataclass(frozen=True)
class SpeedupEstimate:
    """A paired speedup: median of per-round ratios and its confidence interval (``level``)."""

    value: float
    low: float
    high: float
    rounds: int
    level: float = 0.95

    @property
    def width(self) -> float:
        """Relative width of the interval, (high - low) / value."""
        return (self.high - self.low) / self.value if self.value > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "rounds": self.rounds, "level": self.level}


VERIFY_TOLERANCE = 0.05
"""Verification keeps adding rounds while a speedup's 95% interval is wider than this share of it."""
QUIET_LOAD = 0.15
"""Rounds during which other processes used more of the CPU than this are left out of the ratios
(when at least ``MIN_QUIET_ROUNDS`` others remain)."""
MIN_QUIET_ROUNDS = 5


def _quiet(loads: tuple[float | None, ...], index: int) -> bool:
    load = loads[index] if index < len(loads) else None
    return load is None or load <= QUIET_LOAD


@dataclass(frozen=True)
class Verification:
    """Models timed interleaved on one runtime and device (``reference`` is the dense model's key).

    ``loads`` holds, per round, the share of the CPU other processes used while it ran (None where
    the OS does not tell); rounds on a busy machine are left out of the paired ratios.
    """

    timings: Mapping[str, ModelTiming]
    runtime: str
    device: str
    reference: str = "dense"
    settings: Mapping[str, Any] = field(default_factory=dict)
    loads: tuple[float | None, ...] = ()
    execution: str = "eager"
    """"eager" or "cuda-graphs": how the runtime ran the models (the plan's table's mode)."""

    def __getitem__(self, name: str) -> ModelTiming:
        return self.timings[name]

    @property
    def rounds(self) -> int:
        return min(t.rounds for t in self.timings.values())

    def ratios(self, name: str) -> np.ndarray:
        """Per-round speedups reference / ``name`` (quiet rounds only when enough of them)."""
        dense = np.asarray(self.timings[self.reference].samples_ms, dtype=np.float64)
        model = np.asarray(self.timings[name].samples_ms, dtype=np.float64)
        n = min(dense.size, model.size)
        ratios = dense[:n] / model[:n]
        quiet = [i for i in range(n) if _quiet(self.loads, i)]
        return ratios[quiet] if len(quiet) >= MIN_QUIET_ROUNDS else ratios

    @property
    def busy(self) -> bool:
        """True when fewer than ``MIN_QUIET_ROUNDS`` rounds were quiet: the speedup then rests on
        rounds during which other processes kept the machine busy and does not represent it."""
        known = [load for load in self.loads if load is not None]
        return bool(known) and sum(1 for load in known if load <= QUIET_LOAD) < MIN_QUIET_ROUNDS

    @property
    def busy_rounds(self) -> int:
        """Rounds that ran while other processes kept the machine busy."""
        return sum(1 for load in self.loads if load is not None and load > QUIET_LOAD)

    def _paired(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The reference's and ``name``'s samples over the same rounds (quiet ones when enough)."""
        dense = np.asarray(self.timings[self.reference].samples_ms, dtype=np.float64)
        model = np.asarray(self.timings[name].samples_ms, dtype=np.float64)
        n = min(dense.size, model.size)
        quiet = [i for i in range(n) if _quiet(self.loads, i)]
        rounds = quiet if len(quiet) >= MIN_QUIET_ROUNDS else list(range(n))
        return dense[rounds], model[rounds]

    def speedup(self, name: str, *, level: float = 0.95, resamples: int = 2000) -> SpeedupEstimate:
        """Speedup of ``name`` over the reference: the ratio of their p10 latencies over the same
        rounds, with a ``level`` interval from resampling whole rounds (seeded: reproducible)."""
        dense, model = self._paired(name)
        value = float(np.quantile(dense, ESTIMATOR_QUANTILE) / np.quantile(model, ESTIMATOR_QUANTILE))
        if dense.size < 3:
            return SpeedupEstimate(value, value, value, int(dense.size), level)
        rng = np.random.default_rng(0)
        picks = rng.integers(0, dense.size, size=(resamples, dense.size))
        ratios = np.quantile(dense[picks], ESTIMATOR_QUANTILE, axis=1) / np.quantile(
            model[picks], ESTIMATOR_QUANTILE, axis=1
        )
        low, high = np.quantile(ratios, [(1 - level) / 2, 1 - (1 - level) / 2])
        return SpeedupEstimate(value, float(min(low, value)), float(max(high, value)), int(dense.size), level)

    def extended(self, more: Verification) -> Verification:
        """This verification with ``more`` rounds of the same models (same runtime) appended."""
        if set(more.timings) != set(self.timings) or more.runtime != self.runtime:
            raise ValueError("extended() needs more rounds of the same models on the same runtime")
        timings = {}
        for name, timing in self.timings.items():
            samples = np.asarray(timing.samples_ms + more.timings[name].samples_ms, dtype=np.float64)
            timings[name] = ModelTiming(
                float(np.median(samples)),
                float(np.quantile(samples, ESTIMATOR_QUANTILE)),
                float(np.quantile(samples, 0.9)),
                tuple(float(x) for x in samples),
            )
        return dataclasses.replace(self, timings=timings, loads=self._padded_loads() + more._padded_loads())

    def _padded_loads(self) -> tuple[float | None, ...]:
        """One load per round (None where none was recorded)."""
        return tuple(self.loads[i] if i < len(self.loads) else None for i in range(self.rounds))

    def median_speedup(self, name: str, *, level: float = 0.95) -> SpeedupEstimate:
        """The median of the per-round ratios reference / ``name``, with its sign-test interval."""
        ratios = self.ratios(name)
        value, low, high = median_interval(ratios.tolist(), confidence=level)
        return SpeedupEstimate(value, low, high, int(ratios.size), level)
