"""The Ray executor: search workers as Ray actors, on this machine or a cluster.

``RayConnection`` joins a cluster (``--ray-address`` / ``RAY_ADDRESS``) or starts a local one, and is
opened before any work, so a wrong address fails the run at once. ``RayPool`` starts the workers
(``planner.executors.worker.CandidateWorker``), waits until each has loaded the model (a worker that
cannot fails the run with its error), then hands requests to idle workers and collects the results
in request order. A worker that dies has its pending request sent to another, and Ray restarts it
(``max_restarts``); the pool counts the retried evaluations. Only the driver draws random numbers,
so the results never depend on which worker computed them.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from planner.errors import PlannerError
from planner.executors.worker import CandidateWorker, WorkerSpec
from planner.stages.search.pool import PoolStats, Request

RAY_EXTRA = "pip install 'latency-planner[ray]'"

WORKER_RESTARTS = 3
"""Times Ray restarts a dead worker (each restart loads the model again)."""

CONNECT_TIMEOUT_S = 3.0
"""How long the address check waits for the cluster's port before the run is refused."""


LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0 before Ray is imported, Ray keeps a single-machine instance on 127.0.0.1 (its default on
Linux is the machine's network address, which a local run has no reason to open)."""


def import_ray(*, local: bool = False) -> Any:
    """The ``ray`` module, or a ``PlannerError`` naming the extra to install; ``local``: for a Ray
    started here for this run only (bound to loopback)."""
    if local:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    try:
        import ray
    except ImportError as error:
        raise PlannerError(
            f"--executor ray needs Ray, which is not installed here ({error}); install the extra: {RAY_EXTRA} "
            "(or use --executor local)."
        ) from None
    return ray


def check_address(address: str) -> None:
    """Refuse an address whose port does not answer (Ray itself would retry for minutes)."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise PlannerError(
            f"--ray-address {address!r} is not host:port (e.g. 127.0.0.1:6379, the address `ray start --head` "
            "printed); nothing was started."
        )
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise PlannerError(
            f"no Ray cluster answers at {address} ({error}); nothing was started. Start one with `ray start --head` "
            "and pass the address it prints, or leave --ray-address unset for a local one."
        ) from None


class RayConnection:
    """This driver's connection to Ray: an existing cluster, a Ray already initialised in this process
    (kept open at ``close``), or a local instance started here (shut down at ``close``)."""

    def __init__(self, address: str | None) -> None:
        self.ray = import_ray(local=not address)
        self.address = address
        self._owned = False
        if self.ray.is_initialized():
            return
        if address:
            check_address(address)
            self.ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        else:
            self.ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="WARNING",
            )
        self._owned = True

    def resources(self) -> dict[str, float]:
        """The cluster's total resources ("CPU", "GPU", ...)."""
        return {k: float(v) for k, v in self.ray.cluster_resources().items()}

    def close(self) -> None:
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
        self._owned = False


class RayPool:
    """Workers as Ray actors (see the module docstring).

    Args:
        connection: an open ``RayConnection``.
        spec: what every worker loads.
        workers: how many actors.
        gpus_per_worker: 1 for CUDA workers (one device each), else 0.
        worker: the actor's class, built from ``spec`` (benchmarks pass a synthetic one).
    """

    kind = "ray"

    def __init__(
        self,
        connection: RayConnection,
        spec: WorkerSpec,
        workers: int,
        *,
        gpus_per_worker: int = 0,
        worker: type = CandidateWorker,
    ) -> None:
        ray = connection.ray
        self.ray = ray
        self.workers = workers
        self.stats = PoolStats()
        actor = ray.remote(worker).options(
            num_cpus=spec.threads,
            num_gpus=gpus_per_worker,
            max_restarts=WORKER_RESTARTS,
            max_task_retries=0,  # the pool sends a dead worker's request to another one itself
        )
        self._spec_ref = ray.put(spec)  # kept: Ray restarts a dead worker from it
        self.actors = [actor.remote(self._spec_ref) for _ in range(workers)]
        self._idle: collections.deque[Any] = collections.deque(self.actors)
        self._restarting: dict[Any, Any] = {}  # ready() call -> actor being restarted by Ray
        self._busy: dict[Any, Any] = {}  # evaluate() call -> actor
        try:
            self.where = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as error:
            self.close()
            raise PlannerError(f"a Ray worker could not load the model: {_cause(error)}") from None

    def busy(self, actor: Any) -> bool:
        """Whether ``actor`` is computing a request now."""
        return any(a is actor for a in self._busy.values())

    def losses(self, requests: Sequence[Request]) -> list[np.ndarray]:
        started = time.perf_counter()
        out = self.map("evaluate", requests)
        self.stats.evaluations += len(out)
        self.stats.examples += sum(len(x) for x in out)
        self.stats.seconds += time.perf_counter() - started
        return out

    def map(self, method: str, requests: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``worker.method(*request)`` for every request, spread over the workers; results in order."""
        ray = self.ray
        results: list[Any] = [None] * len(requests)
        done = [False] * len(requests)
        queue = collections.deque(range(len(requests)))
        index: dict[Any, int] = {}
        while queue or index:
            while queue and self._idle:
                i = queue.popleft()
                actor = self._idle.popleft()
                ref = getattr(actor, method).remote(*requests[i])
                index[ref], self._busy[ref] = i, actor
            if not index and not self._restarting:
                raise PlannerError(
                    f"every Ray worker died and none could be restarted ({WORKER_RESTARTS} restarts each); the "
                    "workers' logs are in the Ray session folder (/tmp/ray/session_latest/logs)."
                )
            pending = list(index) + list(self._restarting)
            ready, _ = ray.wait(pending, num_returns=1)
            # Everything else finished by now too, in one pass (workers often finish together).
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0) if len(pending) > 1 else (ready, None)
            for ref in ready:
                if ref in self._restarting:
                    actor = self._restarting.pop(ref)
                    try:
                        ray.get(ref)
                        self._idle.append(actor)
                    except ray.exceptions.RayError:
                        pass  # out of restarts: the pool goes on without it
                    continue
                i, actor = index.pop(ref), self._busy.pop(ref)
                try:
                    results[i], done[i] = ray.get(ref), True
                except ray.exceptions.RayActorError:
                    self.stats.retried += 1
                    queue.appendleft(i)
                    self._restarting[actor.ready.remote()] = actor
                    continue
                except ray.exceptions.RayTaskError as error:
                    raise error.as_instanceof_cause() from None
                self._idle.append(actor)
        assert all(done)
        return results

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        self._idle.clear()


def _cause(error: BaseException) -> str:
    """The worker's own exception message when Ray wraps one, else Ray's."""
    text = str(error)
    for line in reversed(text.splitlines()):
        if line.strip().startswith(("RuntimeError:", "PlannerError:", "FileNotFoundError:", "OSError:", "ValueError:")):
            return line.strip()
    return text.strip().splitlines()[-1] if text.strip() else type(error).__name__
