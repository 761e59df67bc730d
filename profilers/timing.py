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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Runner = Callable[[], float]
"""Runs one forward pass of a workload and returns its latency in ms."""

WIDE_SPREAD = 0.25
"""(p90 - p10) / median above which a measurement is reported as noisy."""

ESTIMATOR_QUANTILE = 0.10
"""The latency a table plans with is the 10th percentile of a workload's samples. For deterministic
compute, interference only ever adds time, so low percentiles sit closest to the intrinsic cost:
between two quiet profiles of MiniLM workloads the p10 moved by 6% (median of workloads), the median
by 9% (benchmarks/estimator_bench.py, RESULTS.md). The p10 is used rather than the minimum so that a
single fluke sample does not decide."""


def quantile_interval(values: Sequence[float], q: float, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(quantile, low, high): a distribution-free confidence interval for the ``q`` quantile.

    The bounds are order statistics chosen from the Binomial(n, q) distribution, so nothing is
    assumed about the shape of the noise; with too few values for the level asked, the bounds
    widen to the extreme samples.
    """
    arr = np.sort(np.asarray(values, dtype=np.float64))
    if arr.size == 0:
        raise ValueError("no values to summarise")
    estimate = float(np.quantile(arr, q))
    n = arr.size
    from scipy.stats import binom

    tail = (1 - confidence) / 2
    low_rank = int(binom.ppf(tail, n, q)) - 1  # 0-based order statistics around the quantile
    high_rank = int(binom.ppf(1 - tail, n, q))
    return estimate, float(arr[max(0, low_rank)]), float(arr[min(n - 1, high_rank)])


@dataclass(frozen=True)
class TimingStats:
    """Summary of one workload's samples (ms).

    ``estimate_ms`` is what tables plan with (the ``ESTIMATOR_QUANTILE`` quantile), ``ci_low_ms`` /
    ``ci_high_ms`` its 95% interval; ``samples_ms`` holds the samples in the order they were taken
    (one per round). ``noisy_rounds`` counts rounds left out because the machine was busy with other
    work while they ran (see ``profilers.load``).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ms: tuple[float, ...] = ()
    estimate_ms: float = 0.0
    ci_low_ms: float = 0.0
    ci_high_ms: float = 0.0
    noisy_rounds: int = 0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], *, noisy_rounds: int = 0) -> TimingStats:
        """Percentiles, the planning estimate and its interval of ``samples_ms`` (at least one sample)."""
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no timing samples to summarise")
        p10, median, p90 = np.percentile(arr, [10, 50, 90])
        estimate, low, high = quantile_interval(arr.tolist(), ESTIMATOR_QUANTILE)
        return cls(
            float(median),
            float(p10),
            float(p90),
            int(arr.size),
            tuple(float(v) for v in arr),
            estimate,
            low,
            high,
            noisy_rounds,
        )

    @property
    def spread(self) -> float:
        """Relative spread ``(p90 - p10) / median``."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    @property
    def uncertainty(self) -> float:
        """Relative width of the estimate's interval, ``(high - low) / estimate``."""
        return (self.ci_high_ms - self.ci_low_ms) / self.estimate_ms if self.estimate_ms > 0 else 0.0


def median_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): a distribution-free confidence interval for the median of ``values``
    (the sign-test interval); with fewer than 6 values it is the full range."""
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


@dataclass
class SampleStore:
    """Samples collected so far (mutable; checkpointed between rounds).

    Attributes:
        samples: key -> sample values (ms), in the order taken.
        rounds: key -> the round index each sample was taken in.
        loads: per round, the foreign load while it ran (None where the OS does not tell).
    """

    samples: dict[str, list[float]] = field(default_factory=dict)
    rounds: dict[str, list[int]] = field(default_factory=dict)
    loads: list[float | None] = field(default_factory=list)

    def quiet(self, key: str, threshold: float) -> list[float]:
        """Samples of ``key`` from rounds whose foreign load was at most ``threshold``."""
        values, rounds = self.samples.get(key, []), self.rounds.get(key, [])
        return [v for v, r in zip(values, rounds, strict=True) if _quiet(self.loads, r, threshold)]

    def as_json(self) -> dict[str, object]:
        return {"samples": self.samples, "rounds": self.rounds, "loads": self.loads}

    @classmethod
    def from_json(cls, data: object) -> SampleStore:
        if not isinstance(data, dict):
            return cls()
        samples = {str(k): [float(x) for x in v] for k, v in dict(data.get("samples", {})).items()}
        rounds = {str(k): [int(x) for x in v] for k, v in dict(data.get("rounds", {})).items()}
        loads = [None if x is None else float(x) for x in list(data.get("loads", []))]
        if set(samples) != set(rounds) or any(len(samples[k]) != len(rounds[k]) for k in samples):
            return cls()
        return cls(samples, rounds, loads)


def _quiet(loads: Sequence[float | None], index: int, threshold: float) -> bool:
    load = loads[index] if index < len(loads) else None
    return load is None or load <= threshold


def run_rounds(
    runners: Mapping[str, Runner],
    store: SampleStore,
    *,
    pending: Callable[[SampleStore], Collection[str]],
    calls: Mapping[str, int],
    rng: np.random.Generator,
    steady: Collection[str] = (),
    measure_load: Callable[[], Callable[[], float | None]] | None = None,
    on_sample: Callable[[str], None] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> None:
    """Run rounds until ``pending(store)`` names no workload, visiting the pending ones interleaved.

    ``store`` is updated in place (it may hold samples of an interrupted run). Each round visits, in
    a fresh random order, every workload ``pending`` names; ``steady`` names whole-model workloads:
    they are timed in a steady state, as deployed, after the others, each right after one untimed
    call of itself. ``measure_load`` starts a meter for the round and returns how to read it: the
    round's foreign load is recorded with it (``profilers.load``).
    """
    for key in runners:
        store.samples.setdefault(key, [])
        store.rounds.setdefault(key, [])
    while True:
        keys = sorted(k for k in pending(store) if k in runners)
        if not keys:
            return
        round_index = len(store.loads)
        read = measure_load() if measure_load is not None else None
        cold = [k for k in keys if k not in steady]
        warm = [k for k in keys if k in steady]
        order = [cold[int(i)] for i in rng.permutation(len(cold))] + [warm[int(i)] for i in rng.permutation(len(warm))]
        for key in order:
            if key in steady:
                runners[key]()
            n = calls[key]
            total = 0.0
            for _ in range(n):
                total += runners[key]()
            store.samples[key].append(total / n)
            store.rounds[key].append(round_index)
            if on_sample is not None:
                on_sample(key)
        store.loads.append(read() if read is not None else None)
        if on_round is not None:
            on_round(round_index + 1)
