"""The dense model's references on calibration examples: computed once per model, task and examples;
computed again after an in-place weight edit, for other examples, or another task object."""

from __future__ import annotations

from typing import Any

import torch

from planner.stages.search import references
from tests.tiny_models import classifier_setup


class _Counting:
    """A task whose ``reference`` counts its calls (delegates to the real task)."""

    def __init__(self, task: Any) -> None:
        self.task, self.calls = task, 0

    def reference(self, model: Any, tokens: Any) -> Any:
        self.calls += 1
        return self.task.reference(model, tokens)


def test_a_reference_is_computed_once_until_the_weights_or_the_examples_change() -> None:
    references.clear()
    model, _adapter, task = classifier_setup(n=24)
    counting = _Counting(task)
    first = task.calibration.subset(range(8))
    again = task.calibration.subset(range(8))  # the same examples, another object

    kept = references.dense_reference(counting, model, first)  # type: ignore[arg-type]
    assert references.dense_reference(counting, model, again) is kept and counting.calls == 1  # type: ignore[arg-type]

    other = references.dense_reference(counting, model, task.calibration.subset(range(8, 16)))  # type: ignore[arg-type]
    assert counting.calls == 2 and other.shape == kept.shape and not torch.equal(other, kept)

    with torch.no_grad():
        next(model.parameters()).mul_(0.5)  # an in-place edit: the cached outputs are stale
    edited = references.dense_reference(counting, model, first)  # type: ignore[arg-type]
    assert counting.calls == 3 and not torch.allclose(edited, kept)
    assert torch.allclose(edited, task.reference(model, first))

    another_task = _Counting(task)
    references.dense_reference(another_task, model, first)  # type: ignore[arg-type]
    assert another_task.calls == 1
    references.clear()
