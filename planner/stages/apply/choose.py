"""Choosing how a plan is applied: every recipe a backend offers, kept by held-out closeness to the dense model.

A backend may prune the same plan (the same levels, so the same latency) more than one way. Fisher's
mask tuning refits the kept units of each block by least squares, toward the dense residual stream
or (pre-norm decoders) toward the dense block's own output; at deep cuts (SmolLM2 decode at 3x,
attention emptied in most layers) tuning made the model worse than no tuning with FLAP's bias
compensation (test perplexity 2,460 against 1,362 on the same plan), at three-quarter width in
prefill the block target beat the stream (182 against 578), and on MiniLM's 3x plan for the medical
reviews FLAP's whole apply (its own choice of heads / neurons at the plan's levels, compensated)
beat tuning by 5.67 accuracy points. No per-block rule predicts which (``benchmarks/RESULTS.md``,
2026-12-06), so each recipe is applied and the model with the lowest mean KL from the dense model on
the *selection windows* is kept: examples from the task's training split that no stage before it saw
(not calibration: scoring, tuning and the search use it; not the guard split; never the test set).

Call order: ``apply_best(backend, adapter, plan, task)`` -> (model, ``RecipeChoice`` or None);
``applied_plan(plan, choice)`` is the plan to save beside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from planner.backends.base import Backend, recipes_of
from planner.records.plan import Plan
from planner.tasks.base import Task, Tokenized
from planner.tasks.compare import PairedDifference, paired_mean_difference

SELECTION_EXAMPLES = 32
"""Training-split examples the recipes are compared on (evenly spaced over the split; fewer when it holds
fewer). The KL of a recipe is a mean over them; at SmolLM2 KV 512 the recipes differed by 0.5-2 nats
per token where they differed at all."""


@dataclass(frozen=True)
class RecipeChoice:
    """Which recipe applied the plan, every recipe's mean KL from the dense model (nats per example,
    the task's ``divergence``) on ``examples`` selection examples, and the plan as the kept recipe
    applied it (the same levels; a recipe may choose other heads / neurons at them)."""

    recipe: str
    mean_kl: Mapping[str, float]
    examples: int
    plan: Plan
    margin: PairedDifference | None = None
    """The kept recipe's KL minus the runner-up's, paired over the examples with a 95% interval (None:
    one recipe scored a finite KL); "win" where the examples resolve the choice, else "tie"."""
    runner_up: str | None = None
    """The recipe ``margin`` is against."""

    def text(self) -> str:
        others = ", ".join(f"{name} {kl:.4g}" for name, kl in self.mean_kl.items())
        said = f"applied with {self.recipe} (mean KL on {self.examples} held-out training examples: {others})"
        if self.margin is None:
            return said
        m = self.margin
        resolved = "resolved" if m.verdict == "win" else "not resolved by these examples"
        return f"{said}; {-m.difference:.3g} [{-m.high:.3g}, {-m.low:.3g}] below {self.runner_up}: {resolved}"


def applied_plan(plan: Plan, choice: RecipeChoice | None) -> Plan:
    """The plan the model ``apply_best`` returned holds: ``plan``, or the kept recipe's re-selection of it."""
    return plan if choice is None else choice.plan


def selection_examples(task: Task, count: int = SELECTION_EXAMPLES) -> Tokenized | None:
    """``count`` evenly spaced examples of the task's training split (None when it is empty)."""
    training = getattr(task, "training", None)
    if training is None or len(training) == 0:
        return None
    index = np.unique(np.linspace(0, len(training) - 1, num=min(count, len(training))).round().astype(np.int64))
    return training.subset(index)


def apply_best(
    backend: Backend,
    adapter: Any,
    plan: Plan,
    task: Task | None,
    *,
    log: Any = None,
) -> tuple[nn.Module, RecipeChoice | None]:
    """The plan applied by each of the backend's recipes; the model with the lowest mean KL on the
    selection examples is returned, with the record of the choice (None: one recipe, or no training
    split to choose on, and the backend's default was used). A recipe with ``selected(adapter, plan,
    task) -> Plan`` re-chooses the kept heads / neurons at the plan's levels before it applies; the
    choice's ``plan`` is what the returned model holds (``applied_plan``)."""
    recipes = recipes_of(backend, adapter)
    examples = None if task is None or len(recipes) < 2 else selection_examples(task)
    if task is None or examples is None:
        return next(iter(recipes.values())).apply(adapter, plan, task), None
    reference = task.reference(adapter.model, examples)
    best: tuple[float, str, nn.Module, Plan] | None = None
    scores: dict[str, float] = {}
    per_example: dict[str, np.ndarray] = {}
    for name, recipe in recipes.items():
        select = getattr(recipe, "selected", None)
        applied = plan if select is None else select(adapter, plan, task)
        model = recipe.apply(adapter, applied, task)
        per_example[name] = np.asarray(task.divergence(model, examples, reference), dtype=np.float64)
        kl = float(np.mean(per_example[name]))
        scores[name] = kl if np.isfinite(kl) else float("inf")
        if best is None or scores[name] < best[0]:
            best = (scores[name], name, model, applied)
    assert best is not None
    runner_up, margin = _margin(best[1], scores, per_example)
    choice = RecipeChoice(best[1], scores, len(examples), best[3], margin=margin, runner_up=runner_up)
    if log is not None:
        log(f"      {choice.text()}")
    return best[2], choice


def _margin(
    kept: str, scores: Mapping[str, float], per_example: Mapping[str, np.ndarray]
) -> tuple[str | None, PairedDifference | None]:
    """(the runner-up, the kept recipe's per-example KL against the runner-up's); (None, None) without a
    finite runner-up."""
    finite = sorted((kl, name) for name, kl in scores.items() if np.isfinite(kl) and name != kept)
    if not finite or not np.isfinite(scores[kept]) or per_example[kept].size < 2:
        return None, None
    runner_up = finite[0][1]
    return runner_up, paired_mean_difference(per_example[kept], per_example[runner_up])
