"""Post-training Fisher pruning (Kwon et al., NeurIPS 2022), no retraining.

- score: gradients of the task loss (with the true targets) with respect to all-ones head and neuron
  masks, one gradient per calibration mini-batch; diagonal empirical Fisher per head and neuron; the
  error of a level is half the Fisher mass of the units it removes (grouped-query attention: the
  best whole KV groups with the same number of query heads in each).
- select: mask rearrangement per block (greedy swap on the block Fisher), counts unchanged; grouped
  attention keeps the most important heads per group and the best groups.
- apply: layer-wise mask tuning for the model's family (``planner.backends.tuning``), scales folded
  into the output projections, optionally with FLAP's bias compensation (``compensate``: each output
  projection's bias fitted jointly with the scales, an intercept in the least squares; without
  tuning, ``planner.backends.compensation``), then physical shrinking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from planner.backends.base import Backend, best_keep, is_grouped, level_errors, plan_keep, structured_units
from planner.backends.compensation import compensated_shrink
from planner.backends.fisher_math import diagonal_fisher, rearrange, removal_errors
from planner.backends.flap import FlapBackend, refusal
from planner.backends.tuners import tune_and_fold, tuning_targets
from planner.errors import PlannerError
from planner.models.units import Level, Unit
from planner.records.error_table import ErrorTable
from planner.records.plan import Plan
from planner.tasks.base import Task
from profilers.profiler import progress_bar


def mask_gradients(adapter: Any, task: Task, *, progress: bool = False) -> dict[str, np.ndarray]:
    """Per-batch gradients of the task loss w.r.t. all-ones masks.

    Returns:
        unit name -> (batches, units of that block) float64 gradients (heads or neurons).
    """
    units = structured_units(adapter)
    masks = {u.name: torch.ones(u.size, requires_grad=True) for u in units}
    grads: dict[str, list[np.ndarray]] = {name: [] for name in masks}
    was_training = adapter.model.training
    adapter.model.eval()
    calibration = task.calibration
    batches = -(-len(calibration) // task.batch_size)
    try:
        with progress_bar(batches, "Fisher gradients", unit="batch", enabled=progress) as bar:
            for ids, mask, labels in calibration.batches(task.batch_size):
                with adapter.masked(masks):
                    loss = task.task_loss(adapter.model, ids, mask, labels)
                values = torch.autograd.grad(loss, list(masks.values()))
                for name, value in zip(masks, values, strict=True):
                    grads[name].append(value.double().numpy())
                bar.update(1)
    finally:
        adapter.model.train(was_training)
    return {name: np.stack(parts) for name, parts in grads.items()}


class FisherBackend:
    """Fisher scores, mask rearrangement and mask tuning for transformer families.

    Args:
        tune: run layer-wise mask tuning in ``apply`` (needs the task's calibration data).
        rearrange: use block-Fisher rearrangement in ``select`` (else plain top-k by Fisher).
        teacher_keep: unit name -> heads / neurons kept by the tuning teacher (a masked model); None =
            the dense model.
        compensate: add FLAP's bias compensation in ``apply`` (one more calibration pass).
        tuning_target: what mask tuning fits each block to (``planner.backends.tuners.tuning_targets``):
            ``"stream"``, the dense residual stream (default), or ``"block"``, the dense block's output.
    """

    name = "fisher"
    needs_task = True

    def __init__(
        self,
        *,
        tune: bool = True,
        rearrange: bool = True,
        teacher_keep: dict[str, tuple[int, ...]] | None = None,
        compensate: bool = False,
        tuning_target: str = "stream",
        progress: bool = False,
    ) -> None:
        self.progress = progress
        self.tuning_target = tuning_target
        self.compensate = compensate
        self.tune = tune
        self.rearrange = rearrange
        self.teacher_keep = teacher_keep

    def _check(self, adapter: Any, task: Task | None) -> Task:
        if not getattr(adapter, "supports_shrinking", False):
            raise PlannerError(
                "the Fisher backend prunes heads and neurons of transformer models; use --backend magnitude "
                "for generic Linear/Conv2d models."
            )
        if task is None:
            raise PlannerError(
                "the Fisher backend needs labelled calibration data and a task (pass --data, e.g. 'bbc'); "
                "without the task loss the Fisher would be zero. Use --backend magnitude for data-free pruning."
            )
        return task

    def score(self, adapter: Any, task: Task | None) -> ErrorTable:
        checked = self._check(adapter, task)
        grads = mask_gradients(adapter, checked, progress=self.progress)
        errors, importance = [], {}
        for unit in adapter.units():
            fisher = diagonal_fisher(grads[unit.name])
            importance[unit.name] = fisher
            if is_grouped(unit):
                errors.append(level_errors(fisher, unit, lambda removed: 0.5 * float(removed.sum())))
            else:
                errors.append(removal_errors(fisher, [int(lv.kept or 0) for lv in unit.levels]))
        units = tuple(u.name for u in adapter.units())
        extra = {f"grads::{name}": value for name, value in grads.items()}
        return ErrorTable(units, tuple(errors), importance, "fisher: 1/2 * removed diagonal Fisher", extra)

    def select(self, scores: ErrorTable, unit: Unit, level: Level) -> tuple[int, ...]:
        kept = int(level.kept or 0)
        if is_grouped(unit) or not self.rearrange:
            return best_keep(scores.importance[unit.name], unit, level)
        grads = scores.extra[f"grads::{unit.name}"]
        removed = set(rearrange(grads, grads.shape[1] - kept))
        return tuple(i for i in range(grads.shape[1]) if i not in removed)

    def recipes(self, adapter: Any) -> dict[str, Backend]:
        """The ways this backend can apply a plan to ``adapter``'s model, its own first: with mask
        tuning; tuning each block toward the dense block's own output where the family allows it; no
        tuning, with FLAP's bias compensation instead; and FLAP's whole apply (the same levels, the
        heads / neurons chosen by fluctuation, compensated). ``planner.stages.apply.choose`` keeps the
        one closest to the dense model on held-out data. Each won somewhere: compensation at SmolLM2
        decode 3x (1,362 test perplexity against tuning's 2,460), the block target at three quarters
        width in SmolLM2 prefill (182 against 578), FLAP's apply on MiniLM's 3x plan for the medical
        reviews (55.58% against 49.92% tuned), the stream's tuning at mild cuts."""
        if not self.tune or self.compensate or self.teacher_keep is not None:
            return {"Fisher": self}
        offered: dict[str, Backend] = {"mask tuning": self}
        if self.tuning_target == "stream" and "block" in tuning_targets(adapter):
            offered["block-target tuning"] = FisherBackend(
                rearrange=self.rearrange, tuning_target="block", progress=self.progress
            )
        offered["bias compensation"] = FisherBackend(
            tune=False, rearrange=self.rearrange, compensate=True, progress=self.progress
        )
        if refusal(adapter) is None:
            offered["fluctuation + compensation"] = FlapBackend(progress=self.progress)
        return offered

    def apply(self, adapter: Any, plan: Plan, task: Task | None) -> nn.Module:
        keep = plan_keep(plan)
        if not self.tune and not self.compensate:
            return adapter.shrink(keep)
        checked = self._check(adapter, task)
        if not self.tune:
            return compensated_shrink(adapter, keep, checked)
        folded = tune_and_fold(
            adapter,
            keep,
            checked,
            teacher_keep=self.teacher_keep,
            intercept=self.compensate,
            target=self.tuning_target,
            progress=self.progress,
        )
        return folded.shrink(keep)
