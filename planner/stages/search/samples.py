"""The search's losses on named calibration samples, in one process: what a worker holds.

A search scores candidates on a few fixed subsets of the calibration examples: the evolution's
growing screens, the search sample, and the final pick's held-out examples. ``search_samples`` names
them from the settings alone, so a worker in another process (or on another host) that builds the
same task gets the same examples; ``SampleLosses`` evaluates a level vector on one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from planner.backends.base import Backend
from planner.records.error_table import ErrorTable
from planner.stages.search.builder import CandidateBuilder
from planner.stages.search.loss import CandidateLoss, LossClock
from planner.stages.search.scoring import scorings_for
from planner.tasks.base import Task

SEARCH = "search"
SELECTION = "selection"


def screen(step: int) -> str:
    """Name of the evolution's ``step``-th screening sample (a prefix of the search sample)."""
    return f"screen-{step}"


class SampleLosses:
    """``per_example(levels, sample, scoring) -> (n,) losses`` of the shrunk model on a named sample,
    its units filled the way ``scoring`` names (``planner.stages.search.scoring``).

    Every sample of one scoring shares one candidate builder and one keep cache
    (``CandidateLoss.on``); each sample has its own dense reference, computed once; one clock counts
    everything.

    Args:
        samples: name -> calibration example indices (``search_samples``).
        device: where the model and the examples are put ("cpu", or a worker's own "cuda").
    """

    def __init__(
        self,
        *,
        adapter: Any,
        task: Task,
        backend: Backend,
        scores: ErrorTable,
        samples: Mapping[str, Sequence[int]],
        objective: str,
        device: str = "cpu",
    ) -> None:
        if not samples:
            raise ValueError("SampleLosses needs at least one sample.")
        if device != "cpu":
            adapter.model.to(torch.device(device))
        self.scorings = scorings_for(adapter, task, backend, scores)
        self.default = next(iter(self.scorings))
        """The backend's own scoring (what a request without one is scored under)."""
        self.clock = LossClock()
        tokens = [task.calibration.subset(list(index)).to(device) for index in samples.values()]
        self.losses: dict[str, dict[str, CandidateLoss]] = {}
        """scoring -> sample -> its loss (the dense references come from one cache, ``dense_reference``)."""
        for scoring in self.scorings.values():
            first = CandidateLoss(
                adapter=adapter,
                task=task,
                backend=scoring.selector,
                scores=scoring.scores,
                tokens=tokens[0],
                objective=objective,
                builder=CandidateBuilder(adapter, means=scoring.means),
                clock=self.clock,
            )
            losses = [first] + [first.on(t) for t in tokens[1:]]
            self.losses[scoring.name] = dict(zip(samples, losses, strict=True))

    def _scoring(self, scoring: str | None) -> dict[str, CandidateLoss]:
        name = scoring or self.default
        if name not in self.losses:
            raise KeyError(f"unknown scoring {name!r}; this evaluator holds {', '.join(self.losses)}")
        return self.losses[name]

    def sample(self, name: str, scoring: str | None = None) -> CandidateLoss:
        samples = self._scoring(scoring)
        if name not in samples:
            raise KeyError(f"unknown sample {name!r}; this evaluator holds {', '.join(samples)}")
        return samples[name]

    def per_example(self, levels: Sequence[int], sample: str, scoring: str | None = None) -> np.ndarray:
        """(n,) loss of each example of ``sample`` for the model at ``levels`` (filled as ``scoring``)."""
        return self.sample(sample, scoring).per_example(tuple(levels))

    def model(self, levels: Sequence[int], scoring: str | None = None) -> torch.nn.Module:
        """The shrunk model at ``levels`` (filled as ``scoring``; every sample of it builds the same)."""
        return next(iter(self._scoring(scoring).values())).model(levels)
