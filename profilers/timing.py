"""Robust timing on noisy machines: warm-up, interleaved rounds, medians and spreads.

Every workload is a ``Runner``: a callable that runs the computation once and returns its
latency in milliseconds (host timer on CPU; CUDA events on a GPU). Rounds visit all workloads in
a fresh random order, so slow drifts of the machine's load hit every level alike instead of
biasing whichever level happened to be timed during a busy spell.

Whole models are timed in a steady state, as a deployed model runs back to back; units of a model
are timed cold, as inside a forward pass their weights were evicted by the other layers (settled
unit timings predicted pruned MiniLMs 8-13% too fast). On this project's CPU box with glibc malloc a
model timed right after a different workload pays for the memory churn: an all-pruned MiniLM took
8 ms back to back but 14-23 ms right after the dense model, and the dense model read about 5% slow
right after smaller models, which made plans miss their speedup. Hence ``run_rounds``' order and
its untimed call before every whole-model sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

Runner = Callable[[], float]
"""Runs one forward pass of a workload and returns its latency in ms."""

WIDE_SPREAD = 0.25
"""(p90 - p10) / median above which a measurement is reported as noisy."""


@dataclass(frozen=True)
class TimingStats:
    """Summary of one workload's samples (ms); ``samples_ms`` in the order they were taken (one per
    round, so samples of different workloads with the same index were taken in the same round)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> TimingStats:
        """Median, 10th and 90th percentiles of ``samples_ms`` (at least one sample)."""
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no timing samples to summarise")
        p10, median, p90 = np.percentile(arr, [10, 50, 90])
        return cls(float(median), float(p10), float(p90), int(arr.size), tuple(float(v) for v in arr))

    @property
    def spread(self) -> float:
        """Relative spread ``(p90 - p10) / median``."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0


def median_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): a distribution-free confidence interval for the median of ``values``.

    The interval is between order statistics chosen from the Binomial(n, 1/2) distribution (the
    classic sign-test interval), so it assumes nothing about the shape of the noise; with fewer
    than 6 values it is the full range.
    """
    arr = np.sort(np.asarray(values, dtype=np.float64))
    if arr.size == 0:
        raise ValueError("no values to summarise")
    median = float(np.median(arr))
    n = arr.size
    if n < 6:
        return median, float(arr[0]), float(arr[-1])
    from scipy.stats import binom

    low_rank = int(binom.ppf((1 - confidence) / 2, n, 0.5))  # 0-based index of the lower bound
    high_rank = n - 1 - low_rank
    return median, float(arr[max(0, low_rank - 1)]), float(arr[min(n - 1, high_rank + 1)])


def calls_per_sample(once_ms: float, *, min_sample_ms: float, max_calls: int = 200) -> int:
    """How many calls one sample should average so it lasts at least ``min_sample_ms`` (timer noise),
    given one call's latency ``once_ms``."""
    return int(min(max_calls, max(1, math.ceil(min_sample_ms / max(once_ms, 1e-6)))))


def run_rounds(
    runners: Mapping[str, Runner],
    samples: MutableMapping[str, list[float]],
    *,
    rounds: int,
    calls: Mapping[str, int],
    rng: np.random.Generator,
    steady: Collection[str] = (),
    on_sample: Callable[[str], None] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> None:
    """Add samples until every workload has ``rounds`` of them, visiting workloads interleaved.

    ``samples`` is updated in place (it may already hold samples from an interrupted run). Each
    round visits, in a random order, every workload that still needs samples.

    ``steady`` names whole-model workloads: they are timed in a steady state, as deployed. Each
    round visits the other workloads (units of a model: timed cold, as inside a forward pass)
    first, then the steady ones, each right after one untimed call of itself.
    """
    keys = sorted(runners)
    for key in keys:
        samples.setdefault(key, [])
    round_index = 0
    while True:
        pending = [k for k in keys if len(samples[k]) < rounds]
        if not pending:
            return
        cold = [k for k in pending if k not in steady]
        warm = [k for k in pending if k in steady]
        order = [cold[int(i)] for i in rng.permutation(len(cold))] + [warm[int(i)] for i in rng.permutation(len(warm))]
        for key in order:
            if key in steady:
                runners[key]()
            n = calls[key]
            total = 0.0
            for _ in range(n):
                total += runners[key]()
            samples[key].append(total / n)
            if on_sample is not None:
                on_sample(key)
        round_index += 1
        if on_round is not None:
            on_round(round_index)
