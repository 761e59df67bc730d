"""Tasks: the job a pruned model must keep doing (data, losses, the held-out metric).

Registry: ``TASKS`` maps a task name to its builder; ``build_task(loaded, task=...)`` builds one
("auto" follows from the model: a causal LM gets ``causal-lm``, an encoder ``text-classification``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.config import TASK_CHOICES
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.tasks.base import MetricResult, Task, Tokenized, aggregate
from planner.tasks.causal_lm import CausalLM, build_causal_lm
from planner.tasks.classification import TextClassification, build_text_classification

TASKS: dict[str, Callable[..., Any]] = {
    "text-classification": build_text_classification,
    "causal-lm": build_causal_lm,
}
"""Task name -> builder ``(loaded, *, data, seq_len, calibration_size, batch_size, seed, cache_dir, test_size)``;
``calibration_size`` / ``test_size`` None take the task's defaults."""


def default_task(loaded: LoadedModel) -> str:
    """The task a model is planned for when ``--task auto``: causal LMs -> causal-lm, else classification."""
    return "causal-lm" if getattr(loaded.adapter, "causal_lm", False) else "text-classification"


def resolve_task(name: str, loaded: LoadedModel) -> str:
    """``auto`` -> the model's default task; any other name is checked against the model."""
    task = default_task(loaded) if name == "auto" else name
    if task not in TASKS:
        raise PlannerError(f"The 'task' parameter must be one of {', '.join(TASK_CHOICES)}. Got {name!r} instead.")
    if task == "causal-lm" and not getattr(loaded.adapter, "causal_lm", False):
        raise PlannerError(
            f"--task causal-lm needs a causal language model; {loaded.spec!r} is a {loaded.adapter.architecture} "
            "model. Use --task text-classification (or auto)."
        )
    if task == "text-classification" and getattr(loaded.adapter, "causal_lm", False):
        raise PlannerError(
            f"--task text-classification needs an encoder or a sequence classifier; {loaded.spec!r} is a causal "
            "language model. Use --task causal-lm (or auto)."
        )
    return task


def build_task(
    loaded: LoadedModel,
    *,
    task: str = "auto",
    data: str,
    seq_len: int,
    calibration_size: int | None,
    batch_size: int,
    seed: int,
    cache_dir: Path,
    test_size: int | None = None,
    guard_size: int | None = None,
) -> Task:
    """Build the task ``task`` for ``loaded`` on ``data`` (see each task's module for the data rules)."""
    name = resolve_task(task, loaded)
    built: Task = TASKS[name](
        loaded,
        data=data,
        seq_len=seq_len,
        calibration_size=calibration_size,
        batch_size=batch_size,
        seed=seed,
        cache_dir=cache_dir,
        test_size=test_size,
        guard_size=guard_size,
    )
    return built


__all__ = [
    "TASKS",
    "TASK_CHOICES",
    "CausalLM",
    "MetricResult",
    "Task",
    "TextClassification",
    "Tokenized",
    "aggregate",
    "build_task",
    "default_task",
    "resolve_task",
]
