"""The model-adapter interface shared by BERT-family encoders and generic Linear/Conv2d models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from planner.config.settings import LevelGrid
from planner.models.phases import Shape
from planner.models.units import Unit


@dataclass(frozen=True)
class UnitWorkload:
    """One (shape signature, level, implementation) to time, with its standalone module and inputs."""

    signature: str
    level: int
    impl: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]

    @property
    def key(self) -> str:
        return f"{self.signature}|{self.level}|{self.impl}"


class ModelAdapter(Protocol):
    """What the planner needs from a model family.

    Call order: ``units()``; ``timed(model, shape)`` for end-to-end timing at a shape and phase;
    ``workloads(units, shape, ...)`` for the per-unit timings; ``example_inputs(batch, seq)`` and
    ``forward_module_of(model)`` give the plain forward (outputs to compare); structured families also
    ``shrink(keep)`` / ``shrink_to_levels(levels)`` (a smaller copy) and ``masked(masks)`` (head and
    neuron multipliers, for gradients).
    """

    name: str
    architecture: str
    model: nn.Module
    supports_shrinking: bool

    def units(self) -> tuple[Unit, ...]:
        """Prunable units in model order."""
        ...

    def example_inputs(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, ...]:
        """Positional inputs of ``forward_module()`` at this shape."""
        ...

    def forward_module(self) -> nn.Module:
        """A module taking ``example_inputs`` positionally and returning one tensor."""
        ...

    def forward_module_of(self, model: nn.Module) -> nn.Module:
        """``forward_module`` for another (e.g. shrunk) copy of the model."""
        ...

    def shrink_to_levels(self, levels: Mapping[str, int]) -> nn.Module:
        """A physically shrunk copy at these unit levels (structured adapters only)."""
        ...

    def shrink(self, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        """A physically shrunk copy keeping these heads / neurons per unit (structured adapters only)."""
        ...

    def kept_shape(self, model: nn.Module) -> dict[str, dict[str, int | None]]:
        """Unit -> {"kept", "groups"} of a shrunk copy (structured adapters only)."""
        ...

    def timed(self, model: nn.Module, shape: Shape) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        """The module whose latency is the model's at ``shape`` (prefill, decode step, a reply) and its inputs."""
        ...

    def workloads(
        self,
        units: Sequence[Unit],
        shape: Shape,
        *,
        runtime: str,
        device: str,
        dtype: torch.dtype,
    ) -> list[UnitWorkload]:
        """Standalone workloads, one per distinct signature, level and implementation, at ``shape``."""
        ...


class OutputTensor(nn.Module):
    """Calls a model with positional inputs and returns its first output tensor (for timing/ONNX)."""

    def __init__(self, model: nn.Module, input_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names) if input_names else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.input_names:
            out = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        else:
            out = self.model(*inputs)
        return first_tensor(out)


def first_tensor(output: object) -> torch.Tensor:
    """The first tensor in a model output (tensor, tuple/list, dict or ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        raise TypeError(f"cannot find a tensor in a model output of type {type(output).__name__}")
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list, dict)):
            return first_tensor(value)
    raise TypeError("the model output holds no tensor")


def prefill_only(shape: Shape, family: str) -> None:
    """Encoders and generic models have one phase: refuse decode / generate with the fix."""
    if shape.phase != "prefill":
        from planner.errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"--phase {shape.phase} needs a causal language model; {family} models have only the prefill "
            "phase (one forward over the input). Use --phase prefill."
        )


def level_grid(adapter: object) -> LevelGrid:
    """The level grid an adapter was built with (recorded in tables so a model is rebuilt for them)."""
    return LevelGrid(getattr(adapter, "ffn_step", None), getattr(adapter, "sparsity_levels", None))
