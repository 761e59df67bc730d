"""A search worker: loads the model, the task's calibration data and the candidate builder once, then
scores ``(levels, sample)`` requests. Plain Python (no Ray import): ``planner.executors.ray_pool``
runs it as an actor.

The worker rebuilds everything from the run's configuration, as the driver did, and refuses to start
when what it built differs from the driver's (another model version or data file on that host): a
pool whose workers disagree would search on numbers nobody can reproduce.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from planner.config import RunConfig
from planner.records.error_table import ErrorTable
from planner.tasks.base import Task


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the driver's evaluator.

    Attributes:
        config: the run's configuration (model, data, seed, sizes).
        backend: the backend whose ``select`` picks the kept heads / neurons.
        scores: that backend's error table (computed once, on the driver).
        samples: sample name -> calibration example indices (``planner.stages.search.runner.search_samples``).
        objective: "kl" or "ce".
        fingerprint: the driver's model fingerprint (weights included).
        data_digest: ``calibration_digest`` of the driver's task.
        threads: intra-op threads of this worker (cores / workers).
        device: "cpu", or "cuda" for a worker holding one GPU.
    """

    config: RunConfig
    backend: str
    scores: ErrorTable
    samples: dict[str, tuple[int, ...]]
    objective: str
    fingerprint: str
    data_digest: str
    threads: int
    device: str = "cpu"


def calibration_digest(task: Task) -> str:
    """A short hash of the calibration examples (token ids, masks, labels)."""
    return task.calibration.digest()


def load_checked(config: RunConfig, fingerprint: str, data_digest: str) -> tuple[Any, Task]:
    """The configured model and task, rebuilt here; refused when they differ from the driver's."""
    from planner.stages.load import configured_task, load_configured

    loaded = load_configured(config)
    host = socket.gethostname()
    if loaded.fingerprint != fingerprint:
        raise RuntimeError(
            f"the worker on {host} loaded another model for {config.model!r} (fingerprint "
            f"{loaded.fingerprint}, the driver's is {fingerprint}); install the same model package and "
            "version on every host of the cluster."
        )
    task = configured_task(config, loaded)
    digest = calibration_digest(task)
    if digest != data_digest:
        raise RuntimeError(
            f"the worker on {host} built other calibration data from {config.data!r} (digest {digest}, the "
            f"driver's is {data_digest}); give every host the same data file and package versions."
        )
    return loaded, task


class Worker:
    """What every worker answers: where it runs, once it has loaded everything."""

    def ready(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}


class CandidateWorker(Worker):
    """Holds one ``SampleLosses`` (see the module docstring)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from planner.backends import get_backend
        from planner.stages.search.samples import SampleLosses

        torch.set_num_threads(spec.threads)
        loaded, task = load_checked(spec.config, spec.fingerprint, spec.data_digest)
        self.samples = SampleLosses(
            adapter=loaded.adapter,
            task=task,
            backend=get_backend(spec.backend, progress=False),
            scores=spec.scores,
            samples=spec.samples,
            objective=spec.objective,
            device=spec.device,
        )

    def evaluate(self, levels: tuple[int, ...], sample: str, scoring: str) -> np.ndarray:
        """(n,) per-example losses of the candidate at ``levels`` on ``sample``, its units filled as ``scoring``."""
        return self.samples.per_example(levels, sample, scoring)
