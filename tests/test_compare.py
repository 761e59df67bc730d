"""Paired bootstrap differences: a clear win is a win, noise is a tie, perplexity's direction is lower."""

from __future__ import annotations

import numpy as np
import pytest

from planner.tasks.base import MetricResult, aggregate
from planner.tasks.compare import metric_interval, paired_mean_difference, paired_metric_difference, verdict


def _accuracy(correct: np.ndarray) -> MetricResult:
    weights = np.ones(correct.size)
    return MetricResult("accuracy", aggregate("accuracy", correct, weights), correct, weights, True)


def _perplexity(nll: np.ndarray, tokens: np.ndarray) -> MetricResult:
    return MetricResult("perplexity", aggregate("perplexity", nll, tokens), nll, tokens, False)


def test_verdicts() -> None:
    assert verdict(0.01, 0.05, higher_is_better=True) == "win"
    assert verdict(-0.05, -0.01, higher_is_better=True) == "loss"
    assert verdict(-0.01, 0.02, higher_is_better=True) == "tie"
    assert verdict(-0.05, -0.01, higher_is_better=False) == "win"


def test_accuracy_difference_is_paired() -> None:
    rng = np.random.default_rng(0)
    base = (rng.uniform(size=400) < 0.8).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:20]] = 1.0  # fixes 20 of the errors, breaks none: +5 points
    diff = paired_metric_difference(_accuracy(better), _accuracy(base))
    assert diff.difference == pytest.approx(0.05)
    assert 0 < diff.low <= diff.difference <= diff.high and diff.verdict == "win"
    # Unpaired intervals of each accuracy overlap, yet the paired difference is resolved.
    low_better, _ = metric_interval(_accuracy(better))
    _, high_base = metric_interval(_accuracy(base))
    assert low_better < high_base
    # Swapping the models turns the win into a loss; a model against itself is a tie at 0.
    assert paired_metric_difference(_accuracy(base), _accuracy(better)).verdict == "loss"
    same = paired_metric_difference(_accuracy(base), _accuracy(base))
    assert same.difference == same.low == same.high == 0.0 and same.verdict == "tie"


def test_noise_is_a_tie() -> None:
    rng = np.random.default_rng(1)
    a = (rng.uniform(size=200) < 0.8).astype(float)
    b = a.copy()
    flip = np.concatenate([np.flatnonzero(a == 1)[:4], np.flatnonzero(a == 0)[:3]])
    b[flip] = 1 - b[flip]  # 4 right answers broken, 3 errors fixed: half a point, well inside the noise
    assert paired_metric_difference(_accuracy(a), _accuracy(b)).verdict == "tie"


def test_perplexity_lower_is_a_win_and_windows_are_resampled_with_their_tokens() -> None:
    rng = np.random.default_rng(2)
    tokens = rng.integers(100, 128, size=64).astype(float)
    base_nll = tokens * rng.normal(3.0, 0.3, size=64)
    better_nll = base_nll - tokens * 0.1  # 0.1 nats/token lower on every window
    diff = paired_metric_difference(_perplexity(better_nll, tokens), _perplexity(base_nll, tokens))
    assert diff.difference < 0 and diff.high < 0 and diff.verdict == "win"
    assert diff.difference == pytest.approx(
        np.exp(better_nll.sum() / tokens.sum()) - np.exp(base_nll.sum() / tokens.sum())
    )


def test_mean_difference_and_bad_input() -> None:
    a = np.full(50, 0.1)
    b = np.full(50, 0.2) + np.linspace(-0.01, 0.01, 50)
    diff = paired_mean_difference(a, b)
    assert diff.difference == pytest.approx(-0.1) and diff.verdict == "win"
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        paired_mean_difference(a, b[:10])
    with pytest.raises(ValueError, match="same test set"):
        paired_metric_difference(_accuracy(a), _accuracy(b[:10]))
