"""The calibration curve that maps summed standalone unit times to measured end-to-end latency.

Units are timed standalone (cheap, and shared across layers of one shape); inside a real forward
pass they cost somewhat more or less (weights evicted by other layers, allocator churn between
blocks), and not by one constant factor. So a few whole models are also timed end to end
("anchors": every unit at the same fraction of its range, from dense to minimal), and the
prediction is

    predicted_ms = g(sum over units of median_ms[unit, level])

with g the piecewise-linear, non-decreasing curve through the anchors, extended linearly beyond
them. Because g is increasing, "predicted_ms <= target" is "sum <= g^-1(target)": the solver still
sees an additive budget. With one anchor (the dense model) g is ``fixed_ms + sum``.

On MiniLM (torch, 2 CPU cores) standalone sums were off by up to 18% at some sizes; the curve
predicted 8 random configurations within 2.2%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from profilers.smoothing import non_increasing_fit


@dataclass(frozen=True)
class CalibrationCurve:
    """Piecewise-linear g: summed unit ms -> end-to-end ms, through (sum_ms[i], total_ms[i]).

    ``sum_ms`` is strictly increasing and ``total_ms`` non-decreasing (``fit`` makes them so).
    """

    sum_ms: tuple[float, ...]
    total_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        s, t = np.asarray(self.sum_ms, float), np.asarray(self.total_ms, float)
        if s.size < 1 or s.size != t.size or not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
            raise ValueError("a calibration curve needs matching, finite anchor lists")
        if np.any(np.diff(s) <= 0) or np.any(np.diff(t) < 0):
            raise ValueError("calibration anchors must increase in sum_ms and not decrease in total_ms")

    @classmethod
    def fit(cls, sums_ms: Sequence[float], totals_ms: Sequence[float]) -> CalibrationCurve:
        """Sort anchors by sum, merge equal sums, and make totals non-decreasing (isotonic fit)."""
        order = np.argsort(np.asarray(sums_ms, float), kind="stable")
        s = np.asarray(sums_ms, float)[order]
        t = np.asarray(totals_ms, float)[order]
        keep_s: list[float] = []
        keep_t: list[float] = []
        for value, total in zip(s, t, strict=True):
            if keep_s and value <= keep_s[-1] + 1e-9:
                keep_t[-1] = (keep_t[-1] + total) / 2
            else:
                keep_s.append(float(value))
                keep_t.append(float(total))
        fitted = -non_increasing_fit(-np.asarray(keep_t))
        return cls(tuple(keep_s), tuple(float(v) for v in fitted))

    def _slopes(self) -> tuple[float, float]:
        """Slopes used beyond the first and last anchors (1.0 when there is a single anchor)."""
        if len(self.sum_ms) == 1:
            return 1.0, 1.0
        s, t = self.sum_ms, self.total_ms
        return (t[1] - t[0]) / (s[1] - s[0]), (t[-1] - t[-2]) / (s[-1] - s[-2])

    def total(self, sum_ms: float) -> float:
        """g(sum_ms): predicted end-to-end latency (ms)."""
        s, t = self.sum_ms, self.total_ms
        low, high = self._slopes()
        if sum_ms <= s[0]:
            return t[0] - low * (s[0] - sum_ms)
        if sum_ms >= s[-1]:
            return t[-1] + high * (sum_ms - s[-1])
        return float(np.interp(sum_ms, s, t))

    def max_sum(self, total_ms: float) -> float:
        """The largest sum whose predicted total is <= ``total_ms`` (g's inverse, for budgets)."""
        s, t = self.sum_ms, self.total_ms
        low, high = self._slopes()
        if total_ms >= t[-1]:
            return s[-1] + (total_ms - t[-1]) / high if high > 0 else float("inf")
        if total_ms < t[0]:
            return s[0] - (t[0] - total_ms) / low if low > 0 else float("-inf")
        # Largest segment point with g <= total_ms (flat segments give their right end).
        for i in range(len(s) - 1, 0, -1):
            if t[i - 1] <= total_ms:
                if t[i] <= total_ms:
                    return s[i]
                return s[i - 1] + (total_ms - t[i - 1]) * (s[i] - s[i - 1]) / (t[i] - t[i - 1])
        return s[0]

    @property
    def fixed_ms(self) -> float:
        """g(0): the latency of the parts that are not searched, extrapolated (ms)."""
        return self.total(0.0)
