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
from planner.stages.search.loss import CandidateLoss, LossClock
from planner.tasks.base import Task

SEARCH = "search"
SELECTION = "selection"


def screen(step: int) -> str:
    """Name of the evolution's ``step``-th screening sample (a prefix of the search sample)."""
    return f"screen-{step}"


class SampleLosses:
    """``per_example(levels, sample) -> (n,) losses`` of the shrunk model on a named sample.

    Every sample shares one candidate builder, one keep cache and one clock (``CandidateLoss.on``);
    each has its own dense reference, computed here once.

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
        self.losses: dict[str, CandidateLoss] = {}
        base: CandidateLoss | None = None
        for name, index in samples.items():
            tokens = task.calibration.subset(list(index)).to(device)
            if base is None:
                base = CandidateLoss(
                    adapter=adapter, task=task, backend=backend, scores=scores, tokens=tokens, objective=objective
                )
                self.losses[name] = base
            else:
                self.losses[name] = base.on(tokens)
        self._base = base

    @property
    def clock(self) -> LossClock:
        assert self._base is not None
        return self._base.clock

    def sample(self, name: str) -> CandidateLoss:
        if name not in self.losses:
            raise KeyError(f"unknown sample {name!r}; this evaluator holds {', '.join(self.losses)}")
        return self.losses[name]

    def per_example(self, levels: Sequence[int], sample: str) -> np.ndarray:
        """(n,) loss of each example of ``sample`` for the model at ``levels``."""
        return self.sample(sample).per_example(tuple(levels))

    def model(self, levels: Sequence[int]) -> torch.nn.Module:
        """The shrunk model at ``levels``."""
        assert self._base is not None
        return self._base.model(levels)
