"""The local executor: candidates evaluated one after another in this process (no Ray imported)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from planner.executors.base import PoolStats, Request

if TYPE_CHECKING:  # planner.search imports the executors
    from planner.search.samples import SampleLosses


class LocalPool:
    """A pool of one worker: this process, with every core's intra-op threads."""

    kind = "local"
    workers = 1

    def __init__(self, samples: SampleLosses) -> None:
        self.samples = samples
        self.stats = PoolStats()

    def losses(self, requests: Sequence[Request]) -> list[np.ndarray]:
        started = time.perf_counter()
        out = [self.samples.per_example(levels, sample) for levels, sample in requests]
        self.stats.evaluations += len(out)
        self.stats.examples += sum(len(x) for x in out)
        self.stats.seconds += time.perf_counter() - started
        return out

    def close(self) -> None:
        pass
