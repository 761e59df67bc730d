"""Is one model better than another on held-out data, or is the difference noise?

Paired bootstrap over test examples: both models' per-example values are resampled with the same
indices, so what the examples have in common (hard documents, easy windows) cancels. The verdict is
"win" when the whole 95% interval of the difference is on the better side, "loss" when it is on the
worse side, "tie" otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.tasks.base import MetricResult, aggregate

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` of a metric (or a mean loss) with its bootstrap interval.

    Attributes:
        difference: the value for ``a`` minus the value for ``b`` on all examples.
        low / high: the ``CONFIDENCE`` percentile interval of the resampled differences.
        verdict: "win", "tie" or "loss" for ``a`` against ``b``.
    """

    difference: float
    low: float
    high: float
    verdict: str


def verdict(low: float, high: float, *, higher_is_better: bool) -> str:
    """ "win" / "loss" when the interval excludes zero on the better / worse side, else "tie"."""
    if low > 0:
        return "win" if higher_is_better else "loss"
    if high < 0:
        return "loss" if higher_is_better else "win"
    return "tie"


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_metric_difference(
    a: MetricResult, b: MetricResult, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> PairedDifference:
    """``a.value - b.value`` (accuracy: fraction; perplexity: ratio-free difference) with a paired
    bootstrap interval over the test examples (documents or windows) both were evaluated on."""
    if a.name != b.name or a.per_example.shape != b.per_example.shape:
        raise ValueError(
            f"cannot pair {a.name} on {a.examples} examples with {b.name} on {b.examples}; "
            "evaluate both models on the same test set."
        )
    idx = _indices(a.examples, resamples, seed)
    weights = a.weights
    diffs = np.array(
        [aggregate(a.name, a.per_example[i], weights[i]) - aggregate(b.name, b.per_example[i], weights[i]) for i in idx]
    )
    low, high = _interval(diffs)
    return PairedDifference(a.value - b.value, low, high, verdict(low, high, higher_is_better=a.higher_is_better))


def paired_mean_difference(
    a: np.ndarray, b: np.ndarray, *, lower_is_better: bool = True, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> PairedDifference:
    """``mean(a) - mean(b)`` of per-example values (e.g. KL to the dense model) with a paired interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired values must be two 1-D arrays of one length; got {a.shape} and {b.shape}.")
    delta = a - b
    diffs = delta[_indices(a.size, resamples, seed)].mean(axis=1)
    low, high = _interval(diffs)
    return PairedDifference(float(delta.mean()), low, high, verdict(low, high, higher_is_better=not lower_is_better))


def paired_statistic(
    a: MetricResult,
    b: MetricResult,
    statistic: Callable[[float, float], float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(a.value, b.value)`` (e.g. a quality loss: points lost, or a perplexity ratio - 1) with a
    paired bootstrap interval: (value, low, high) over the examples both were evaluated on."""
    if a.name != b.name or a.per_example.shape != b.per_example.shape:
        raise ValueError(f"cannot pair {a.name} on {a.examples} examples with {b.name} on {b.examples}.")
    value = float(statistic(a.value, b.value))
    if a.examples < 2:
        return value, value, value
    idx = _indices(a.examples, resamples, seed)
    values = np.array(
        [
            statistic(
                aggregate(a.name, a.per_example[i], a.weights[i]), aggregate(b.name, b.per_example[i], b.weights[i])
            )
            for i in idx
        ]
    )
    low, high = _interval(values)
    return value, min(low, value), max(high, value)


def metric_interval(
    result: MetricResult, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of one model's metric over its test examples (error bars on a plot)."""
    idx = _indices(result.examples, resamples, seed)
    values = np.array([aggregate(result.name, result.per_example[i], result.weights[i]) for i in idx])
    return _interval(values)
