"""Contract tests for every runtime, plus resumable and robust timing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from profilers import ProfileError, Profiler, ProfilerSettings, TimingStats, Workload, get_runtime
from profilers.runtimes import RUNTIMES
from profilers.smoothing import non_increasing_fit
from profilers.timing import SampleStore, run_rounds

MODULE_RUNTIMES = sorted(set(RUNTIMES) - {"llama.cpp"})
"""Runtimes that time any module (llama.cpp runs decoder workloads only: tests/test_gguf.py)."""


def settings(**overrides: object) -> ProfilerSettings:
    """Profiler settings for tests: torch on CPU, float32, 1 thread, 3 rounds (override any)."""
    values: dict[str, object] = dict(
        runtime="torch", device="cpu", dtype="float32", threads=1, rounds=3, stability=10.0
    )
    values.update(overrides)
    return ProfilerSettings(**values)  # type: ignore[arg-type]


def _workloads() -> list[Workload]:
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    return [
        Workload("small", nn.Linear(32, 8), (x,)),
        Workload("large", nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 32)), (x,)),
    ]


@pytest.mark.parametrize("runtime", MODULE_RUNTIMES)
def test_every_runtime_returns_positive_well_formed_timings(runtime: str) -> None:
    stats = Profiler(settings(runtime=runtime, warmup=1)).measure(_workloads(), progress=False)
    assert set(stats) == {"small", "large"}
    for s in stats.values():
        assert np.isfinite(s.median_ms) and s.median_ms > 0
        assert s.p10_ms <= s.median_ms <= s.p90_ms
        assert s.repeats == 3


@pytest.mark.parametrize("runtime", MODULE_RUNTIMES)
def test_every_runtime_leaves_modules_untouched(runtime: str) -> None:
    workloads = _workloads()
    before = [w.module.state_dict()["weight"].clone() if "weight" in w.module.state_dict() else None for w in workloads]
    Profiler(settings(runtime=runtime, rounds=1)).measure(workloads, progress=False)
    assert workloads[0].module.weight.dtype == torch.float32
    assert torch.equal(workloads[0].module.weight, before[0])  # type: ignore[arg-type]


def test_unknown_runtime_lists_the_available_ones() -> None:
    with pytest.raises(ProfileError, match="unknown runtime 'ort'; available: torch, onnxruntime"):
        get_runtime("ort")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_cuda_without_a_gpu_is_a_clear_error(runtime: str) -> None:
    with pytest.raises(ProfileError, match=r"cuda|CUDA"):
        Profiler(settings(runtime=runtime, device="cuda"))


def test_onnxruntime_cpu_refuses_half_precision() -> None:
    with pytest.raises(ProfileError, match="float32 only"):
        Profiler(settings(runtime="onnxruntime", dtype="fp16"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rounds": 0}, "rounds"),
        ({"threads": -1}, "threads"),
        ({"dtype": "int3"}, "unknown dtype"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfileError, match=message):
        Profiler(settings(**kwargs))


class _Crash(Exception):
    pass


class _Counting(nn.Module):
    """A workload that counts its calls and, once armed, fails on the call after ``fail_after``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail_after: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise _Crash
        return x * 2.0


def test_interrupted_profile_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "t.csv.partial.json"
    config = settings(rounds=4, min_sample_ms=0.0)
    # The runtime times a private copy of the module: count calls through a shared counter object.
    shared = _Counting()

    class Proxy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return shared(x)

    work = [Workload("a", Proxy(), (torch.ones(3),)), Workload("b", Proxy(), (torch.ones(3),))]
    shared.fail_after = 2 + 2 * 2  # 2 sizing calls, then 2 rounds of 2 workloads, then a crash
    with pytest.raises(_Crash):
        Profiler(config).measure(work, checkpoint=checkpoint, checkpoint_key="k", progress=False)
    assert checkpoint.is_file()
    saved = json.loads(checkpoint.read_text())["store"]["samples"]
    assert sorted(len(v) for v in saved.values()) == [2, 2]

    shared.calls, shared.fail_after = 0, None
    stats = Profiler(config).measure(work, checkpoint=checkpoint, checkpoint_key="k", progress=False)
    assert shared.calls == 2 + 2 * 2  # sizing, then only the two missing rounds of each workload
    assert all(s.repeats == 4 for s in stats.values())

    # A checkpoint for something else is ignored, not mixed in.
    shared.calls = 0
    Profiler(config).measure(work, checkpoint=checkpoint, checkpoint_key="other", progress=False)
    assert shared.calls == 2 + 4 * 2


def _until(rounds: int):  # type: ignore[no-untyped-def]
    """A stopping rule: every workload until it has ``rounds`` samples."""
    return lambda store: [k for k, v in store.samples.items() if len(v) < rounds]


def test_rounds_interleave_workloads() -> None:
    order: list[str] = []
    runners = {k: (lambda k=k: order.append(k) or 1.0) for k in "abc"}
    store = SampleStore()
    run_rounds(runners, store, pending=_until(3), calls=dict.fromkeys("abc", 1), rng=np.random.default_rng(0))
    assert [sorted(order[i : i + 3]) for i in (0, 3, 6)] == [["a", "b", "c"]] * 3
    assert all(len(v) == 3 for v in store.samples.values()) and len(store.loads) == 3


def test_timing_stats_and_smoothing() -> None:
    stats = TimingStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.median_ms == 3.0 and stats.repeats == 5 and stats.p90_ms > stats.median_ms
    fitted = non_increasing_fit([5.0, 6.0, 4.0, 4.5, 1.0])
    assert np.all(np.diff(fitted) <= 0)
    assert fitted.sum() == pytest.approx(20.5)  # isotonic regression preserves the mean
    assert non_increasing_fit([3.0, 2.0, 1.0]).tolist() == [3.0, 2.0, 1.0]


def test_whole_models_are_timed_after_units_each_after_an_untimed_call() -> None:
    calls: list[str] = []
    times = {"unit_a": 1.0, "unit_b": 1.0, "dense": 10.0, "half": 6.0}

    def runner(key: str):  # type: ignore[no-untyped-def]
        return lambda: calls.append(key) or times[key]

    store = SampleStore()
    run_rounds(
        {k: runner(k) for k in times},
        store,
        pending=_until(2),
        calls=dict.fromkeys(times, 1),
        rng=np.random.default_rng(1),
        steady={"dense", "half"},
    )
    for round_calls in (calls[:6], calls[6:]):
        assert set(round_calls[:2]) == {"unit_a", "unit_b"}  # units first (cold)
        first, second = round_calls[2:4], round_calls[4:6]  # then each model twice: untimed + timed
        assert first[0] == first[1] and second[0] == second[1] and {first[0], second[0]} == {"dense", "half"}
    assert all(len(v) == 2 for v in store.samples.values())


class _CountingModule(nn.Module):
    calls = 0  # class-level: runtimes time copies of the module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return x * 2.0


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_whole_models_get_an_untimed_call_only_where_the_runtime_needs_it(runtime: str) -> None:
    if runtime == "onnxruntime":  # ONNX Runtime runs an exported copy: count calls of the torch module per round
        settles = get_runtime(runtime).settles_whole_models
        calls: list[str] = []
        run_rounds(
            {"model": lambda: calls.append("model") or 1.0},  # type: ignore[func-returns-value]
            SampleStore(),
            pending=_until(4),
            calls={"model": 1},
            rng=np.random.default_rng(0),
            steady={"model"} if settles else (),
        )
        assert len(calls) == 4  # no settling call
        return
    profiler = Profiler(settings(runtime=runtime, rounds=4, min_sample_ms=0.0))
    _CountingModule.calls = 0
    profiler.measure([Workload("model", _CountingModule(), (torch.ones(3),), steady=True)], progress=False)
    # One call sizes the sample, then per round an untimed settling call and a timed one.
    assert _CountingModule.calls == 1 + 4 * 2


def test_runtimes_declare_whether_whole_models_are_settled() -> None:
    assert get_runtime("torch").settles_whole_models is True
    assert get_runtime("onnxruntime").settles_whole_models is False


def _loads(values):  # type: ignore[no-untyped-def]
    """A fake load meter: round i reads ``values[i]`` (0 once they run out)."""
    rounds = iter(values)

    def start():  # type: ignore[no-untyped-def]
        value = next(rounds, 0.0)
        return lambda: value

    return start


def test_rounds_on_a_busy_machine_are_left_out_and_replaced() -> None:
    config = settings(rounds=4, min_sample_ms=0.0, max_rounds=12)
    profiler = Profiler(config, load_reader=_loads([0.9, 0.0, 0.6, 0.0, 0.0, 0.0]))
    stats = profiler.measure(_workloads(), progress=False)
    assert stats.rounds == 6 and stats.noisy_rounds == 2  # two busy rounds, replaced by two quiet ones
    assert all(s.repeats == 4 and s.noisy_rounds == 2 for s in stats.values()) and not stats.noisy
    assert stats.foreign_load == pytest.approx(0.0)


def test_a_machine_busy_all_along_gives_a_noisy_measurement() -> None:
    config = settings(rounds=3, min_sample_ms=0.0, max_rounds=5)
    stats = Profiler(config, load_reader=_loads([0.5] * 10)).measure(_workloads(), progress=False)
    assert stats.rounds == 5 and set(stats.noisy) == {"small", "large"}
    assert all(s.repeats == 5 for s in stats.values())  # no quiet samples: all of them, flagged


def test_unsettled_workloads_get_more_rounds_up_to_the_cap() -> None:
    jitter = iter(np.random.default_rng(0).uniform(1.0, 3.0, 1000))

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time as clock

            clock.sleep(next(jitter) * 1e-3)
            return x

    work = [Workload("steady", nn.Identity(), (torch.ones(2),)), Workload("jumpy", Noisy(), (torch.ones(2),))]
    config = settings(rounds=5, max_rounds=9, stability=0.02, min_sample_ms=0.0)
    stats = Profiler(config, load_reader=_loads([])).measure(work, progress=False)
    assert stats["jumpy"].repeats == 9 and "jumpy" in stats.noisy  # never settled: capped and reported
    assert stats["steady"].repeats <= stats["jumpy"].repeats


def test_a_time_cap_shorter_than_one_round_is_refused() -> None:
    slow = [Workload("slow", _Sleep(0.05), (torch.ones(1),))]
    with pytest.raises(ProfileError, match="shorter than one round"):
        Profiler(settings(max_seconds=0.001)).measure(slow, progress=False)


class _Sleep(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time as clock

        clock.sleep(self.seconds)
        return x


def test_the_load_meter_reads_a_share_of_the_cpu() -> None:
    from profilers.load import LoadMeter

    meter = LoadMeter().start()
    sum(i * i for i in range(200_000))
    share = meter.foreign()
    assert share is None or 0.0 <= share <= 1.0


def test_the_load_meter_counts_the_runs_own_child_processes_as_its_own() -> None:
    """A local Ray cluster's raylet and actors are descendants of the run: their CPU is not foreign load."""
    import os
    import subprocess
    import sys
    import time

    from profilers.load import _descendants_cpu

    before = _descendants_cpu(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(1.5)
        spun = _descendants_cpu(os.getpid()) - before
        assert spun >= 0.2  # the spinning child's CPU time is counted as this process's own
        assert _descendants_cpu(child.pid) == 0.0  # a process without children owns no one else's
    finally:
        child.kill()
        child.wait()
