"""``Profiler.measure``: time many workloads on one runtime, interleaved, resumable, noise-aware.

A workload is one unit at one level (or the whole model), given as an ``nn.Module`` and its
positional inputs. The profiler knows nothing about models or plans: it turns workloads into
runners with the runtime, warms them up, and collects samples round by round in a random order.
After every round the samples so far are written (atomically) to a checkpoint file, so an
interrupted profile resumes where it stopped.

How many rounds: at least ``rounds`` quiet ones per workload; then more, for the workloads whose
estimate is not yet settled (its 95% interval wider than ``stability`` of it), up to
``max_rounds``. A round during which other processes used more than ``quiet_load`` of the machine's
CPU (``profilers.load``) is kept apart and does not count: under a persistent load every sample is
slow alike, which no spread statistic can see. Stops at ``max_rounds`` rounds or ``max_seconds``;
workloads that still have too few quiet samples or an unsettled estimate are reported as noisy.

Before anything is prepared the C heap is settled (``profilers.heap``; best done before the models
were built, as the ``planner`` command does): timings then read what a long-running process gets,
not what a fresh one pays for its first large frees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from profilers.atomic import atomic_write_text
from profilers.errors import ProfileError
from profilers.heap import AS_FOUND, heap_state, settle_heap
from profilers.load import LoadMeter
from profilers.runtimes import canonical_dtype, check_execution, get_runtime
from profilers.timing import Runner, SampleStore, TimingStats, calls_per_sample, run_rounds


@dataclass(frozen=True)
class Workload:
    """One thing to time: ``module(*inputs)`` (module and inputs are never modified).

    ``steady``: True for whole models (timed in a steady state, as deployed), False for units of a
    model (timed cold, as inside a forward pass). See ``profilers.timing.run_rounds``. Runtimes whose
    ``settles_whole_models`` is False time steady workloads like the others (ONNX Runtime).
    """

    key: str
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    steady: bool = False


@dataclass(frozen=True)
class ProfilerSettings:
    """Validated, frozen profiler configuration (the planner derives it from its run configuration;
    nothing here has a default that the planner relies on).

    Attributes:
        runtime: "torch", "onnxruntime" (the optimized graph) or "onnxruntime-plain".
        device: "cpu" or "cuda".
        dtype: "float32", "float16" or "bfloat16".
        threads: intra-op threads (CPU); default: all cores torch sees.
        rounds: samples per workload (medians over these).
        warmup: untimed calls per workload before sampling, besides the one that sizes samples.
        min_sample_ms: a sample averages enough calls to last at least this long (timer noise).
        seed: seeds the interleaving order.
        execution: "eager" or "cuda-graphs" (``profilers.runtimes.EXECUTIONS``).
    """

    runtime: str
    device: str
    dtype: str
    threads: int
    rounds: int
    warmup: int = 0
    min_sample_ms: float = 2.0
    seed: int = 0
    max_rounds: int | None = None
    stability: float = 0.05
    quiet_load: float = 0.15
    max_seconds: float | None = None
    execution: str = "eager"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        if self.threads == 0:
            object.__setattr__(self, "threads", torch.get_num_threads())
        for name, low in (("threads", 1), ("rounds", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ProfileError(f"The '{name}' parameter must be an integer >= {low}. Got {value!r} instead.")
        if self.max_rounds is None:
            object.__setattr__(self, "max_rounds", 3 * self.rounds)
        if not isinstance(self.max_rounds, int) or self.max_rounds < self.rounds:
            raise ProfileError(
                f"The 'max_rounds' parameter must be an integer >= rounds ({self.rounds}). "
                f"Got {self.max_rounds!r} instead."
            )
        if not self.min_sample_ms >= 0:
            raise ProfileError(f"The 'min_sample_ms' parameter must be >= 0. Got {self.min_sample_ms!r} instead.")
        if not self.stability > 0:
            raise ProfileError(f"The 'stability' parameter must be > 0. Got {self.stability!r} instead.")
        if not 0 <= self.quiet_load <= 1:
            raise ProfileError(f"The 'quiet_load' parameter must be in [0, 1]. Got {self.quiet_load!r} instead.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ProfileError(f"The 'max_seconds' parameter must be > 0 (or None). Got {self.max_seconds!r} instead.")


@dataclass(frozen=True)
class Measured(Mapping[str, TimingStats]):
    """What ``Profiler.measure`` found: per workload its ``TimingStats`` (a read-only mapping),
    plus how the sampling went.

    Attributes:
        rounds: rounds run in this call and earlier (resumed) ones.
        loads: per round, the foreign load while it ran (None where the OS does not tell).
        noisy: workloads whose estimate is not settled (too few quiet samples, or an interval wider
            than the stability threshold at the round cap), most uncertain first.
        seconds: wall time of this call's sampling.
        busy: workloads with too few quiet samples: their estimates include samples taken while
            other processes kept the machine busy.
    """

    stats: Mapping[str, TimingStats]
    rounds: int
    loads: tuple[float | None, ...]
    noisy: tuple[str, ...]
    seconds: float
    quiet_load: float = 0.15
    busy: tuple[str, ...] = ()
    fusions: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    """Per workload, the fused operators the runtime's graph optimizer placed (ONNX Runtime)."""
    heap: str = AS_FOUND
    """The C heap the samples ran on (``profilers.heap.HEAP_STATES``): "settled" or "as found"."""

    def __getitem__(self, key: str) -> TimingStats:
        return self.stats[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def noisy_rounds(self) -> int:
        """Rounds that ran while the machine was busy with other work (left out of the estimates)."""
        return sum(1 for load in self.loads if load is not None and load > self.quiet_load)

    @property
    def foreign_load(self) -> float | None:
        """The median foreign load over the rounds (None where the OS does not tell)."""
        known = [x for x in self.loads if x is not None]
        return float(np.median(known)) if known else None


LoadReader = Callable[[], Callable[[], float | None]]
"""Starts a load meter for one round; calling the result reads the round's foreign load."""


class Profiler:
    """Times workloads on one runtime and device. Call order: ``measure(workloads)``.

    Args:
        load_reader: how a round's foreign load is measured (default: ``profilers.load.LoadMeter``).
    """

    def __init__(self, settings: ProfilerSettings, *, load_reader: LoadReader | None = None) -> None:
        self.settings = settings
        self.runtime = get_runtime(settings.runtime)
        self.runtime.check(settings.device, settings.dtype)
        check_execution(self.runtime.name, settings.device, settings.execution, self.runtime.executions)
        self.load_reader = load_reader or _load_reader

    def measure(
        self,
        workloads: Sequence[Workload],
        *,
        checkpoint: Path | None = None,
        checkpoint_key: str = "",
        progress: bool = True,
        description: str = "profiling",
        pending: Callable[[SampleStore], Collection[str]] | None = None,
    ) -> Measured:
        """Time every workload; returns key -> stats (see the module docstring for how many rounds).

        Args:
            checkpoint: file for resumable partial samples; reused only when its ``checkpoint_key``
                (the caller's description of what is measured) matches.
            progress: show a progress bar on stderr.
            pending: a different stopping rule: store -> the keys that still need a round (it is
                also stopped by ``max_rounds`` and ``max_seconds``).
        """
        keys = [w.key for w in workloads]
        if len(set(keys)) != len(keys):
            raise ValueError("workload keys must be unique")
        s = self.settings
        full_key = json.dumps(
            {"key": checkpoint_key, "settings": s.__dict__, "workloads": sorted(keys)}, sort_keys=True
        )
        store = _load_checkpoint(checkpoint, full_key)
        rng = np.random.default_rng(s.seed + len(store.loads))
        settle_heap()
        heap = heap_state()
        with self.runtime.threads(s.threads), _quiet():
            runners: dict[str, Runner] = {}
            for w in workloads:
                runners[w.key] = self.runtime.prepare(
                    w.module, w.inputs, device=s.device, dtype=s.dtype, threads=s.threads, execution=s.execution
                )
            calls: dict[str, int] = {}
            one_round_ms = 0.0
            for key, runner in runners.items():
                for _ in range(s.warmup):
                    runner()
                once = runner()
                calls[key] = calls_per_sample(once, min_sample_ms=s.min_sample_ms)
                one_round_ms += once * calls[key]
            if s.max_seconds is not None and one_round_ms / 1e3 > s.max_seconds:
                raise ProfileError(
                    f"The time cap of {s.max_seconds:g} s is shorter than one round of samples (about "
                    f"{one_round_ms / 1e3:.1f} s); raise the cap or time fewer workloads."
                )
            started = time.perf_counter()
            stop = _default_pending(s, keys, started)
            rule = stop if pending is None else _both(stop, pending, s, started)
            expected = sum(max(0, s.rounds - len(store.quiet(k, s.quiet_load))) for k in keys)
            with progress_bar(expected, description, enabled=progress) as bar:
                run_rounds(
                    runners,
                    store,
                    pending=rule,
                    calls=calls,
                    rng=rng,
                    steady={w.key for w in workloads if w.steady} if self.runtime.settles_whole_models else (),
                    measure_load=self.load_reader,
                    on_sample=lambda _key: bar.update(1),
                    on_round=lambda _r: _save_checkpoint(checkpoint, full_key, store),
                )
            seconds = time.perf_counter() - started
        fusions = {k: dict(r.fusions) for k, r in runners.items() if hasattr(r, "fusions")}
        return dataclasses.replace(_summarise(store, keys, s, seconds), fusions=fusions, heap=heap)


def _load_reader() -> Callable[[], float | None]:
    meter = LoadMeter().start()
    return meter.foreign


def _default_pending(
    s: ProfilerSettings, keys: Sequence[str], started: float
) -> Callable[[SampleStore], Collection[str]]:
    """Workloads with fewer than ``rounds`` quiet samples, or an unsettled estimate below the cap."""

    def pending(store: SampleStore) -> list[str]:
        if _capped(store, s, started):
            return []
        out = []
        for key in keys:
            quiet = store.quiet(key, s.quiet_load)
            if len(quiet) < s.rounds or TimingStats.from_samples(quiet).uncertainty > s.stability:
                out.append(key)
        return out

    return pending


def _both(
    stop: Callable[[SampleStore], Collection[str]],
    pending: Callable[[SampleStore], Collection[str]],
    s: ProfilerSettings,
    started: float,
) -> Callable[[SampleStore], Collection[str]]:
    """The caller's rule, within the caps (and never before every workload has ``rounds`` samples)."""

    def rule(store: SampleStore) -> Collection[str]:
        if _capped(store, s, started):
            return []
        short = [k for k in store.samples if len(store.samples[k]) < s.rounds]
        return short if short else pending(store)

    return rule


def _capped(store: SampleStore, s: ProfilerSettings, started: float) -> bool:
    assert s.max_rounds is not None
    if len(store.loads) >= s.max_rounds:
        return True
    return s.max_seconds is not None and time.perf_counter() - started >= s.max_seconds


def _summarise(store: SampleStore, keys: Sequence[str], s: ProfilerSettings, seconds: float) -> Measured:
    """Stats from each workload's quiet samples (all of them where too few were quiet)."""
    stats: dict[str, TimingStats] = {}
    noisy: list[tuple[float, str]] = []
    busy: list[str] = []
    for key in keys:
        quiet = store.quiet(key, s.quiet_load)
        loaded = len(store.samples[key]) - len(quiet)
        enough = len(quiet) >= min(s.rounds, 3)
        used = quiet if enough else store.samples[key]
        st = TimingStats.from_samples(used, noisy_rounds=loaded)
        stats[key] = st
        if len(quiet) < s.rounds:
            busy.append(key)
        if not enough or len(quiet) < s.rounds or st.uncertainty > s.stability:
            noisy.append((st.uncertainty if enough else float("inf"), key))
    ordered = tuple(k for _, k in sorted(noisy, reverse=True))
    return Measured(stats, len(store.loads), tuple(store.loads), ordered, seconds, s.quiet_load, tuple(busy))


def _load_checkpoint(path: Path | None, key: str) -> SampleStore:
    if path is None or not path.is_file():
        return SampleStore()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return SampleStore()
    if not isinstance(data, dict) or data.get("key") != key:
        return SampleStore()
    return SampleStore.from_json(data.get("store"))


def _save_checkpoint(path: Path | None, key: str, store: SampleStore) -> None:
    if path is not None:
        atomic_write_text(path, json.dumps({"key": key, "store": store.as_json()}))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TracerWarning.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values: object) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, *, unit: str = "sample", enabled: bool = True) -> Iterator[Any]:
    """A tqdm bar on stderr (a no-op bar when disabled, empty, or PLANNER_NO_PROGRESS is set)."""
    if not enabled or total == 0 or os.environ.get("PLANNER_NO_PROGRESS"):
        yield _NullBar()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False)
    try:
        yield bar
    finally:
        bar.close()
