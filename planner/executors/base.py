"""What a pool of candidate evaluators is: the search hands it level vectors, it gives back losses.

A request is ``(levels, sample)``: one level index per unit and the name of a calibration sample
(``planner.search.samples``). A pool returns each request's per-example losses, in request order,
whoever computed them. Evaluations are pure (the same request gives the same losses on any worker),
so a search's trajectory depends on its seed and batch size, never on the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Request = tuple[tuple[int, ...], str]
"""(levels, sample name)."""


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


def executor_text(record: Mapping[str, Any]) -> str:
    """``describe``'s record as a sentence fragment for logs and ``report.md``."""
    retried = f", {record['retried']} retried after a worker died" if record.get("retried") else ""
    return (
        f"{record['evaluations']} evaluations on {record['workers']} {record['kind']} worker(s), "
        f"{float(record['evaluations_per_second']):.2f}/s{retried}"
    )


def describe(pool: CandidatePool) -> dict[str, float | str]:
    """``report.json``'s record of a search's executor."""
    return {
        "kind": pool.kind,
        "workers": pool.workers,
        "evaluations": pool.stats.evaluations,
        "evaluations_per_second": round(pool.stats.per_second, 3),
        "retried": pool.stats.retried,
    }
