"""``Profiler.measure``: time many workloads on one runtime, interleaved, resumable.

A workload is one unit at one level (or the whole model), given as an ``nn.Module`` and its
positional inputs. The profiler knows nothing about models or plans: it turns workloads into
runners with the runtime, warms them up, and collects samples round by round in a random order.
After every round the samples so far are written (atomically) to a checkpoint file, so an
interrupted profile resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from profilers.atomic import atomic_write_text
from profilers.errors import ProfileError
from profilers.runtimes import canonical_dtype, get_runtime
from profilers.timing import WIDE_SPREAD, Runner, TimingStats, calls_per_sample, run_rounds


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
        runtime: "torch" or "onnxruntime".
        device: "cpu" or "cuda".
        dtype: "float32", "float16" or "bfloat16".
        threads: intra-op threads (CPU); default: all cores torch sees.
        rounds: samples per workload (medians over these).
        warmup: untimed calls per workload before sampling, besides the one that sizes samples.
        min_sample_ms: a sample averages enough calls to last at least this long (timer noise).
        seed: seeds the interleaving order.
    """

    runtime: str
    device: str
    dtype: str
    threads: int
    rounds: int
    warmup: int = 0
    min_sample_ms: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        if self.threads == 0:
            object.__setattr__(self, "threads", torch.get_num_threads())
        for name, low in (("threads", 1), ("rounds", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ProfileError(f"The '{name}' parameter must be an integer >= {low}. Got {value!r} instead.")
        if not self.min_sample_ms >= 0:
            raise ProfileError(f"The 'min_sample_ms' parameter must be >= 0. Got {self.min_sample_ms!r} instead.")


class Profiler:
    """Times workloads on one runtime and device. Call order: ``measure(workloads)``."""

    def __init__(self, settings: ProfilerSettings) -> None:
        self.settings = settings
        self.runtime = get_runtime(settings.runtime)
        self.runtime.check(settings.device, settings.dtype)

    def measure(
        self,
        workloads: Sequence[Workload],
        *,
        checkpoint: Path | None = None,
        checkpoint_key: str = "",
        progress: bool = True,
        description: str = "profiling",
    ) -> dict[str, TimingStats]:
        """Time every workload; returns key -> stats.

        Args:
            checkpoint: file for resumable partial samples; reused only when its ``checkpoint_key``
                (the caller's description of what is measured) matches.
            progress: show a progress bar on stderr.
        """
        keys = [w.key for w in workloads]
        if len(set(keys)) != len(keys):
            raise ValueError("workload keys must be unique")
        s = self.settings
        full_key = json.dumps(
            {"key": checkpoint_key, "settings": s.__dict__, "workloads": sorted(keys)}, sort_keys=True
        )
        samples = _load_checkpoint(checkpoint, full_key)
        rng = np.random.default_rng(s.seed + sum(len(v) for v in samples.values()))
        with self.runtime.threads(s.threads), _quiet():
            runners: dict[str, Runner] = {}
            for w in workloads:
                runners[w.key] = self.runtime.prepare(
                    w.module, w.inputs, device=s.device, dtype=s.dtype, threads=s.threads
                )
            calls: dict[str, int] = {}
            for key, runner in runners.items():
                for _ in range(s.warmup):
                    runner()
                calls[key] = calls_per_sample(runner(), min_sample_ms=s.min_sample_ms)
            remaining = sum(max(0, s.rounds - len(samples.get(k, []))) for k in keys)
            with progress_bar(remaining, description, enabled=progress) as bar:
                run_rounds(
                    runners,
                    samples,
                    rounds=s.rounds,
                    calls=calls,
                    rng=rng,
                    steady={w.key for w in workloads if w.steady} if self.runtime.settles_whole_models else (),
                    on_sample=lambda _key: bar.update(1),
                    on_round=lambda _r: _save_checkpoint(checkpoint, full_key, samples),
                )
        stats = {k: TimingStats.from_samples(samples[k][: s.rounds]) for k in keys}
        noisy = [k for k, st in stats.items() if st.spread > WIDE_SPREAD]
        if noisy:
            warnings.warn(
                f"{len(noisy)} of {len(stats)} measurements have a wide spread ((p90 - p10) / median > "
                f"{WIDE_SPREAD:.0%}), e.g. {noisy[0]}: the machine is busy; close other work or raise --rounds.",
                RuntimeWarning,
                stacklevel=2,
            )
        return stats


def _load_checkpoint(path: Path | None, key: str) -> dict[str, list[float]]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key:
        return {}
    raw = data.get("samples", {})
    return {str(k): [float(x) for x in v] for k, v in raw.items()} if isinstance(raw, dict) else {}


def _save_checkpoint(path: Path | None, key: str, samples: dict[str, list[float]]) -> None:
    if path is not None:
        atomic_write_text(path, json.dumps({"key": key, "samples": samples}))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TracerWarning.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


class _NullBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, unit: str = "sample", enabled: bool = True) -> Iterator[Any]:
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
