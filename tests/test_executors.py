"""Executors: the search's candidates evaluated in this process or on Ray actors. The same seed gives
the same plan with any number of workers; a worker killed mid-search has its request retried on
another; bad settings are refused before any work."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from planner.backends import get_backend
from planner.cli import main
from planner.config import RunConfig
from planner.errors import PlannerError
from planner.executors import Executor, ExecutorSettings, plan_workers
from planner.stages.load import configured_task, load_configured
from planner.stages.score import cached_scores
from planner.stages.search import search_levels
from tests.test_pipeline import tiny_config
from tests.tiny_models import table_for

# ----- settings refused before any work (no Ray needed) ------------------------------------------


def test_workers_are_planned_from_the_cluster_and_never_oversubscribe() -> None:
    assert plan_workers(None, "cpu", {"CPU": 2.0}) == (1, 2, 0)
    assert plan_workers(2, "cpu", {"CPU": 2.0}) == (2, 1, 0)
    assert plan_workers(None, "cuda", {"CPU": 16.0, "GPU": 8.0}) == (8, 2, 1)
    with pytest.raises(PlannerError, match=r"--workers 3 on a Ray cluster with 2 CPU cores.*at most --workers 2"):
        plan_workers(3, "cpu", {"CPU": 2.0})
    with pytest.raises(PlannerError, match=r"--workers 4 asks for 4 GPU workers.*has 2 GPUs; ask for at most"):
        plan_workers(4, "cuda", {"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(PlannerError, match="has no GPU"):
        plan_workers(None, "cuda", {"CPU": 16.0})


def test_bad_executor_settings_are_refused_by_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PlannerError, match=r"The 'workers' parameter must be an integer >= 1"):
        RunConfig(executor="ray", workers=0)
    with pytest.raises(PlannerError, match=r"--workers 2 needs --executor ray"):
        RunConfig(workers=2)
    with pytest.raises(PlannerError, match=r"The 'executor' parameter must be one of local, ray"):
        RunConfig(executor="dask")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(PlannerError, match=r"needs Ray, which is not installed.*latency-planner\[ray\]"):
        RunConfig(executor="ray")


def test_cli_refuses_bad_executor_input_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--executor", "ray", "--workers", "0"]) == 2
    assert "'workers'" in capsys.readouterr().err
    assert main(["run", "--workers", "2"]) == 2
    assert "--executor ray" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray (the [ray] extra)")


@needs_ray
def test_an_unreachable_ray_address_fails_at_once_and_starts_nothing() -> None:
    from planner.executors.ray_pool import check_address

    address = f"127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    with pytest.raises(PlannerError, match=rf"no Ray cluster answers at {address}.*nothing was started"):
        Executor(ExecutorSettings("ray", 1, address))
    assert time.perf_counter() - started < 30
    with pytest.raises(PlannerError, match="is not host:port"):
        check_address("nonsense")


# ----- Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """One local Ray for the module (2 CPUs, as CI has), on loopback; pools made here do not shut it down."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs Ray (the [ray] extra)")
    from planner.executors.ray_pool import import_ray

    ray = import_ray(local=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class _Setup:
    """A run's pieces rebuilt from a config, as a worker rebuilds them."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.loaded = load_configured(config)
        self.task = configured_task(config, self.loaded)
        self.backend = get_backend("fisher", progress=False)
        self.scores = cached_scores(self.backend, self.loaded, self.task, cache_dir=config.cache_dir)
        self.table = table_for(self.loaded.adapter, self.loaded.fingerprint)

    def search(self, method: str, pool: Any = None, *, batch: int | None = None, evaluations: int = 24) -> Any:
        config = self.config.replace(search=method, search_evaluations=evaluations, search_seconds=0.0)
        config = config.replace(search_batch=batch) if batch else config
        settings = config.search_settings(calibration=len(self.task.calibration), default_examples=4)
        return search_levels(
            adapter=self.loaded.adapter,
            task=self.task,
            table=self.table,
            scores=self.scores,
            backend=self.backend,
            budget_ms=self.table.budget_ms(1.6),
            settings=settings,
            pool=pool,
        )

    def pool(self, executor: Executor, method: str) -> Any:
        settings = self.config.replace(search=method).search_settings(
            calibration=len(self.task.calibration), default_examples=4
        )
        return executor.search_pool(
            config=self.config,
            loaded=self.loaded,
            task=self.task,
            backend=self.backend,
            scores=self.scores,
            settings=settings,
        )


@pytest.fixture(scope="module")
def setup(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> _Setup:
    return _Setup(tiny_config(workspace, tmp_path_factory.mktemp("cache"), calibration_size=12, search_examples=8))


def _same_search(a: Any, b: Any) -> None:
    assert a.levels == b.levels
    assert [c.levels for c in a.result.top] == [c.levels for c in b.result.top]
    assert [c.loss for c in a.result.top] == pytest.approx([c.loss for c in b.result.top], rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_evolution_gives_the_same_plan_with_any_number_of_ray_workers(
    ray_cluster: Any, setup: _Setup, workers: int
) -> None:
    alone = setup.search("evolution")
    with Executor(ExecutorSettings("ray", workers)) as executor:
        pool = setup.pool(executor, "evolution")
        spread = setup.search("evolution", pool)
        assert pool.workers == workers and {w["threads"] for w in pool.where} == {2 // workers}
    _same_search(alone, spread)
    assert spread.executor == {
        "kind": "ray",
        "workers": workers,
        "evaluations": spread.cost["evaluations"],
        "evaluations_per_second": spread.executor["evaluations_per_second"],
        "retried": 0,
    }
    assert spread.cost["evaluations"] == alone.cost["evaluations"] > 0


def test_spdy_in_batches_gives_the_same_plan_on_one_process_and_on_two_workers(ray_cluster: Any, setup: _Setup) -> None:
    alone = setup.search("spdy", batch=2)
    with Executor(ExecutorSettings("ray", 2)) as executor:
        spread = setup.search("spdy", setup.pool(executor, "spdy"), batch=2)
    _same_search(alone, spread)


def test_a_worker_killed_mid_search_is_retried_on_another_and_the_plan_is_unchanged(
    ray_cluster: Any, setup: _Setup
) -> None:
    undisturbed = setup.search("evolution", evaluations=60)
    with Executor(ExecutorSettings("ray", 2)) as executor:
        pool = setup.pool(executor, "evolution")
        victim, pid = pool.actors[0], pool.where[0]["pid"]
        killed = threading.Event()

        def kill_when_busy() -> None:
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline and not killed.is_set():
                if pool.stats.evaluations >= 10 and pool.busy(victim):
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                time.sleep(0.0005)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        disturbed = setup.search("evolution", pool, evaluations=60)
        killed.set()
        killer.join()
    _same_search(undisturbed, disturbed)
    assert disturbed.executor is not None and disturbed.executor["retried"] >= 1


def test_a_worker_that_cannot_load_the_model_fails_the_pool_at_start(
    ray_cluster: Any, setup: _Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    # The driver's model differs from what the workers load (another package version on their host).
    monkeypatch.setattr(setup, "loaded", dataclasses.replace(setup.loaded, fingerprint="0000000000000000"))
    with (
        Executor(ExecutorSettings("ray", 1)) as executor,
        pytest.raises(
            PlannerError, match=r"a Ray worker could not load the model: .*another model.*same model package"
        ),
    ):
        setup.pool(executor, "spdy")


def test_run_on_ray_records_the_executor_in_the_report(ray_cluster: Any, workspace: Path, tmp_path: Path) -> None:
    import json

    import jsonschema

    from planner.pipeline import run_pipeline
    from planner.records.report import report_schema

    config = tiny_config(workspace, tmp_path / "cache", executor="ray", workers=2)
    run_pipeline(config, out=tmp_path / "run", progress=False)
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    jsonschema.validate(data, report_schema())
    executor = data["search"]["executor"]
    assert executor["kind"] == "ray" and executor["workers"] == 2 and executor["evaluations"] > 0


def test_sweep_on_ray_workers_makes_the_same_plans_and_metrics_as_here(
    ray_cluster: Any, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planner import sweep
    from planner.pipeline import StageClock, prepare

    config = tiny_config(workspace, tmp_path / "cache", search_seconds=0.0, search_evaluations=12)
    # One table for both sweeps: a busy machine would otherwise measure a new one for the second.
    prepared = prepare(config, StageClock(), progress=False)
    monkeypatch.setattr(sweep, "prepare", lambda *_a, **_k: prepared)
    methods = ("evolution", "uniform")
    here = sweep.run_sweep(config, [1.05, 1.1], out=tmp_path / "here", methods=methods, progress=False)
    spread = sweep.run_sweep(
        config.replace(executor="ray", workers=2), [1.05, 1.1], out=tmp_path / "ray", methods=methods, progress=False
    )
    base = ["method", "target_speedup", "heads_kept", "neurons_kept", "metric", "predicted_speedup"]
    first, second = (f[f["matched_to"] == ""][base].reset_index(drop=True) for f in (here, spread))
    assert len(first) == 4
    assert first[base[:4]].astype(str).equals(second[base[:4]].astype(str))  # the same plans
    assert first["metric"].to_numpy() == pytest.approx(second["metric"].to_numpy(), abs=1e-9)
    assert (spread["heldout_kl"] >= 0).all() and set(spread["verdict"]) <= {"baseline", "win", "tie", "loss"}
