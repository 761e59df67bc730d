"""The search's candidate-pool interface: the search hands a pool level vectors, it gives back losses.

The search owns this interface; ``LocalPool`` (this process) implements it here, and
``planner.executors`` implements it with Ray actors (importing the search, never the reverse).

A request is ``(levels, sample, scoring)``: one level index per unit, the name of a calibration sample
(``planner.stages.search.samples``) and the name of the way the candidate's units are filled
(``planner.stages.search.scoring``). A pool returns each request's per-example losses, in request order,
whoever computed them. Evaluations are pure (the same request gives the same losses on any worker),
so a search's trajectory depends on its seed and batch size, never on the pool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # samples build losses from the model; a pool only needs their interface
    from planner.stages.search.samples import SampleLosses

Request = tuple[tuple[int, ...], str, str]
"""(levels, sample name, scoring name)."""


@dataclass
class PoolStats:
    """What a pool did: evaluations, examples scored, wall time inside ``losses`` (s), and how many
    evaluations were sent again because their worker died."""

    evaluations: int = 0
    examples: int = 0
    seconds: float = 0.0
    retried: int = 0

    @property
    def per_second(self) -> float:
        """Evaluations per second of wall time spent waiting on the pool."""
        return self.evaluations / self.seconds if self.seconds > 0 else 0.0


class CandidatePool(Protocol):
    """Evaluates requests (see the module docstring) on one or more workers."""

    kind: str
    """The executor's name ("local", "ray")."""
    workers: int
    stats: PoolStats

    def losses(self, requests: Sequence[Request]) -> list[np.ndarray]:
        """Per-example losses of each request, in order."""
        ...

    def close(self) -> None:
        """Stop the workers (and a Ray instance the pool started)."""
        ...


def describe(pool: CandidatePool) -> dict[str, float | str]:
    """``report.json``'s record of a search's executor."""
    return {
        "kind": pool.kind,
        "workers": pool.workers,
        "evaluations": pool.stats.evaluations,
        "evaluations_per_second": round(pool.stats.per_second, 3),
        "retried": pool.stats.retried,
    }


class LocalPool:
    """A pool of one worker: this process, with every core's intra-op threads."""

    kind = "local"
    workers = 1

    def __init__(self, samples: SampleLosses) -> None:
        self.samples = samples
        self.stats = PoolStats()

    def losses(self, requests: Sequence[Request]) -> list[np.ndarray]:
        started = time.perf_counter()
        out = [self.samples.per_example(levels, sample, scoring) for levels, sample, scoring in requests]
        self.stats.evaluations += len(out)
        self.stats.examples += sum(len(x) for x in out)
        self.stats.seconds += time.perf_counter() - started
        return out

    def close(self) -> None:
        pass
