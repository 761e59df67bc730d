"""Executors: where a search's candidates are evaluated ("local": this process; "ray": Ray actors on
this machine or a cluster). Timing never runs here: profiling and verification stay in the driver,
one process per device, after the fan-out work is done.

The candidate-pool interface is the search's (``planner.stages.search.pool``); Ray's pool and workers
implement it here. May import: the search and load stages, records, models, tasks, backends, config
and the leaves; never a composer. Only the composers import executors.

``Executor`` is opened at the start of a run (a bad address or too many workers fail before any
work) and makes one ``CandidatePool`` per model, task and backend scores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from planner.config import EXECUTORS, ExecutorSettings
from planner.stages.search.pool import CandidatePool, LocalPool, PoolStats, Request, describe


def plan_workers(requested: int | None, device: str, resources: Mapping[str, float]) -> tuple[int, int, int]:
    """(workers, intra-op threads per worker, GPUs per worker) for a Ray cluster with ``resources``.

    Raises:
        PlannerError: more workers than cores (CPU) or GPUs (CUDA), or CUDA without GPUs.
    """
    from planner.errors import PlannerError

    cpus = max(1, int(resources.get("CPU", 1)))
    if device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if gpus == 0:
            raise PlannerError(
                "--device cuda with --executor ray puts one worker on each GPU, but the Ray cluster has no GPU; "
                "start Ray on the GPU machines (or use --executor local)."
            )
        workers = requested or gpus
        if workers > gpus:
            raise PlannerError(
                f"--workers {workers} asks for {workers} GPU workers (one GPU each), but the Ray cluster has {gpus} "
                f"GPU{'s' if gpus != 1 else ''}; ask for at most --workers {gpus}."
            )
        return workers, max(1, cpus // workers), 1
    workers = requested or 1
    if workers > cpus:
        raise PlannerError(
            f"--workers {workers} on a Ray cluster with {cpus} CPU cores: each worker needs at least one core of its "
            f"own (no oversubscription); ask for at most --workers {cpus}."
        )
    return workers, cpus // workers, 0


class Executor:
    """An open executor (a context manager): ``pool(...)`` makes candidate pools; ``close`` stops Ray
    if this run started it."""

    def __init__(self, settings: ExecutorSettings, *, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.connection: Any = None
        self.workers, self.threads, self.gpus = 1, 0, 0
        self._pools: list[CandidatePool] = []
        if settings.kind == "ray":
            from planner.executors.ray_pool import RayConnection

            self.connection = RayConnection(settings.address or os.environ.get("RAY_ADDRESS") or None)
            try:
                self.workers, self.threads, self.gpus = plan_workers(
                    settings.workers, device, self.connection.resources()
                )
            except Exception:
                self.close()
                raise

    def pool(
        self,
        *,
        config: Any,
        loaded: Any,
        task: Any,
        backend: Any,
        scores: Any,
        samples: Mapping[str, Sequence[int]],
        objective: str,
    ) -> CandidatePool:
        """A pool evaluating candidates of ``loaded`` on ``task``'s calibration ``samples``."""
        from planner.stages.search.samples import SampleLosses

        if self.connection is None:
            local = SampleLosses(
                adapter=loaded.adapter, task=task, backend=backend, scores=scores, samples=samples, objective=objective
            )
            return LocalPool(local)
        from planner.executors.ray_pool import RayPool
        from planner.executors.worker import WorkerSpec, calibration_digest

        spec = WorkerSpec(
            config=config,
            backend=backend.name,
            scores=scores,
            samples={name: tuple(int(i) for i in index) for name, index in samples.items()},
            objective=objective,
            fingerprint=loaded.fingerprint,
            data_digest=calibration_digest(task),
            threads=self.threads,
            device="cuda" if self.gpus else "cpu",
        )
        pool = RayPool(self.connection, spec, self.workers, gpus_per_worker=self.gpus)
        self._pools.append(pool)
        return pool

    def search_pool(
        self, *, config: Any, loaded: Any, task: Any, backend: Any, scores: Any, settings: Any
    ) -> CandidatePool:
        """``pool`` for a search with ``settings`` (``planner.config.SearchSettings``): its samples and objective."""
        from planner.stages.search.runner import search_samples

        return self.pool(
            config=config,
            loaded=loaded,
            task=task,
            backend=backend,
            scores=scores,
            samples=search_samples(settings, len(task.calibration)),
            objective=settings.objective,
        )

    def actors(self, spec: Any, worker: type) -> Any:
        """A ``RayPool`` of ``worker`` actors built from ``spec`` (which names its ``threads``), one per
        worker; ``map(method, requests)`` spreads calls over them."""
        if self.connection is None:
            raise ValueError("Executor.actors needs --executor ray")
        from planner.executors.ray_pool import RayPool

        pool = RayPool(self.connection, spec, self.workers, gpus_per_worker=0, worker=worker)
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
        self._pools.clear()
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


__all__ = [
    "EXECUTORS",
    "CandidatePool",
    "Executor",
    "ExecutorSettings",
    "LocalPool",
    "PoolStats",
    "Request",
    "describe",
    "plan_workers",
]
