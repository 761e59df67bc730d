"""Activation statistics on calibration data, over real tokens only (padding left out): what the
training-free peers score with (FLAP's per-channel fluctuation, ShortGPT's Block Influence)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.tasks.base import Task


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def calibration_passes(task: Task, model: nn.Module, each_batch: Callable[[torch.Tensor], None]) -> None:
    """Run ``model`` over the task's calibration batches (no gradients, eval mode), calling
    ``each_batch(real)`` with the (batch, seq) bool mask of real tokens before each forward."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for ids, mask, _ in task.calibration.batches(task.batch_size):
                each_batch(mask.bool())
                task.logits(model, ids, mask)
    finally:
        model.train(was_training)


class ChannelMoments:
    """Per input channel of one projection: mean and variance over real tokens (float64)."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.total = torch.zeros(width, dtype=torch.float64)
        self.squares = torch.zeros(width, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        """``x``: (tokens, width) inputs of real tokens."""
        x64 = x.double()
        self.count += x64.shape[0]
        self.total += x64.sum(dim=0)
        self.squares += x64.pow(2).sum(dim=0)

    @property
    def mean(self) -> np.ndarray:
        return (self.total / max(self.count, 1)).numpy()

    @property
    def variance(self) -> np.ndarray:
        """Sample variance (n - 1), (width,)."""
        n = max(self.count, 2)
        mean = self.total / max(self.count, 1)
        return ((self.squares - self.count * mean.pow(2)) / (n - 1)).clamp_min(0.0).numpy()


def input_moments(task: Task, model: nn.Module, modules: Sequence[nn.Module]) -> list[ChannelMoments]:
    """Mean and variance of each input channel of each of ``modules`` (Linear or GPT-2 Conv1D) over the
    calibration set's real tokens."""
    real: list[torch.Tensor] = []
    moments = [ChannelMoments(_in_features(m)) for m in modules]

    def hook(store: ChannelMoments) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = _first_tensor(args)  # (batch, seq, width)
            store.add(x[real[-1]] if x.dim() == 3 else x.reshape(-1, x.shape[-1]))

        return record

    handles = [m.register_forward_pre_hook(hook(s)) for m, s in zip(modules, moments, strict=True)]
    try:
        calibration_passes(task, model, real.append)
    finally:
        for handle in handles:
            handle.remove()
    return moments


_HELD: list[tuple[tuple[Any, ...], Any, Any, list[ChannelMoments]]] = []
"""Recent ``dense_input_moments`` answers: (key, weak model, weak task, moments), newest last."""
_HOLD = 4


def dense_input_moments(task: Task, model: nn.Module, modules: Sequence[nn.Module]) -> list[ChannelMoments]:
    """``input_moments`` remembered while ``model``, ``task`` and ``modules`` are the same objects and no
    parameter of the model changed in place: every recipe that compensates asks for the dense model's
    moments once more per apply (a calibration pass each, about a minute per sweep apply on SmolLM2)."""
    versions = _parameter_versions(model)
    if versions is None:
        return input_moments(task, model, modules)
    key = (id(model), id(task), tuple(id(m) for m in modules), versions)
    for held_key, held_model, held_task, moments in _HELD:
        if held_key == key and held_model() is model and held_task() is task:
            return moments
    moments = input_moments(task, model, modules)
    _HELD.append((key, weakref.ref(model), weakref.ref(task), moments))
    del _HELD[:-_HOLD]
    return moments


def _parameter_versions(model: nn.Module) -> tuple[int, ...] | None:
    """Each parameter's in-place write counter (a change to any weight changes the activations); None
    where a parameter has none (made under ``torch.inference_mode``)."""
    try:
        return tuple(int(p._version) for p in model.parameters())
    except RuntimeError:
        return None


def block_influence(task: Task, model: nn.Module, layers: Sequence[nn.Module]) -> np.ndarray:
    """(L,) ShortGPT's Block Influence of each layer: the mean over real calibration tokens of
    1 - cosine(layer input, layer output). Low: the layer barely changes its input."""
    real: list[torch.Tensor] = []
    sums = np.zeros(len(layers))
    counts = np.zeros(len(layers))

    def hook(index: int) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]  # (batch, seq, hidden)
            y = _first_tensor(output)
            keep = real[-1]
            cosine = torch.nn.functional.cosine_similarity(x[keep].double(), y[keep].double(), dim=-1)
            sums[index] += float((1.0 - cosine).sum())
            counts[index] += int(keep.sum())

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        calibration_passes(task, model, real.append)
    finally:
        for handle in handles:
            handle.remove()
    return sums / np.maximum(counts, 1)


def _in_features(module: nn.Module) -> int:
    weight = module.get_parameter("weight")
    return int(weight.shape[1] if isinstance(module, nn.Linear) else weight.shape[0])
