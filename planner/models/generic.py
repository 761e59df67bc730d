"""Any ``nn.Module``: every ``nn.Linear`` / ``nn.Conv2d`` is a unit with weight-sparsity levels.

Levels per layer: dense; unstructured sparsity 40%..99% geometric in density (timed both as a
dense kernel on masked weights and, for Linear on CPU with torch, as a CSR sparse kernel); 2:4
(dense-masked, plus PyTorch's semi-structured kernel on CUDA where its shape rules allow); and
output-channel keep ratios (a smaller layer; the next layer's input shrink is not counted).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from planner.errors import UnsupportedModelError
from planner.models.base import OutputTensor, UnitWorkload, prefill_only
from planner.models.phases import Shape
from planner.models.units import Level, Unit, weight_levels
from profilers.sparse_kernels import (
    CSRLinear,
    SemiStructuredLinear,
    semi_structured_supported,
    two_four_mask,
    unstructured_mask,
)

DEFAULT_SPARSITY_LEVELS = 12
DEFAULT_CHANNEL_RATIOS = (0.75, 0.5, 0.25)


def _masked(module: nn.Module, mask: torch.Tensor) -> Any:
    out: Any = copy.deepcopy(module)
    with torch.no_grad():
        out.weight.mul_(mask.to(out.weight.dtype))
    return out


def weight_mask(weight: torch.Tensor, level: Level) -> torch.Tensor:
    """Keep-mask for a weight-sparsity level; conv weights are grouped over (in, kh, kw)."""
    flat = weight.reshape(weight.shape[0], -1)
    if level.structure == "2:4":
        return two_four_mask(flat).reshape(weight.shape)
    return unstructured_mask(weight, float(level.sparsity or 0.0))


def _fewer_outputs(module: Any, kept: int) -> nn.Module:
    if isinstance(module, nn.Linear):
        out: Any = nn.Linear(module.in_features, kept, bias=module.bias is not None)
    else:
        if module.groups != 1:
            raise UnsupportedModelError(f"channel levels for grouped convolutions are not supported ({module})")
        out = nn.Conv2d(
            module.in_channels,
            kept,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    out = out.to(device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(module.weight[:kept])
        if module.bias is not None:
            out.bias.copy_(module.bias[:kept])
    return out


class GenericAdapter:
    """Generic models from a factory: units are their Linear and Conv2d layers."""

    architecture = "generic"

    def __init__(
        self,
        model: nn.Module,
        example: tuple[torch.Tensor, ...],
        *,
        name: str,
        sparsity_levels: int = DEFAULT_SPARSITY_LEVELS,
        channel_ratios: Sequence[float] = DEFAULT_CHANNEL_RATIOS,
    ) -> None:
        self.model = model.eval()
        self.name = name
        self.example = example
        self.sparsity_levels = sparsity_levels
        self.channel_ratios = tuple(channel_ratios)
        self._layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and n]
        if not self._layers:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no nn.Linear or nn.Conv2d layers to prune; "
                "the generic adapter needs at least one."
            )
        self._inputs = self._capture_inputs(example)

    def _capture_inputs(self, example: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        handles = []
        for name, module in self._layers:

            def hook(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                seen.setdefault(name, args[0].detach().clone())

            handles.append(module.register_forward_pre_hook(hook))
        try:
            with torch.inference_mode():
                self.model(*example)
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n, _ in self._layers if n not in seen]
        if missing:
            raise UnsupportedModelError(f"layers {missing} did not run on the example inputs; they cannot be timed.")
        return seen

    def _signature(self, name: str, module: nn.Module) -> str:
        shape = tuple(self._inputs[name].shape)
        if isinstance(module, nn.Linear):
            return f"linear:{module.in_features}x{module.out_features}:bias={module.bias is not None}:in={shape}"
        assert isinstance(module, nn.Conv2d)
        return (
            f"conv2d:{tuple(module.weight.shape)}:s={module.stride}:p={module.padding}:d={module.dilation}:"
            f"g={module.groups}:bias={module.bias is not None}:in={shape}"
        )

    def units(self) -> tuple[Unit, ...]:
        out = []
        for name, module in self._layers:
            per_row = module.weight[0].numel()
            is_conv = isinstance(module, nn.Conv2d)
            ratios = self.channel_ratios if not (is_conv and module.groups != 1) else ()
            levels = weight_levels(
                int(module.weight.shape[0]),
                sparsity_levels=self.sparsity_levels,
                two_four=per_row % 4 == 0,
                channel_ratios=ratios,
            )
            kind = "conv2d" if is_conv else "linear"
            size = int(module.weight.shape[0])
            out.append(Unit(name, kind, levels, self._signature(name, module), size, modules={"weight": name}))
        return tuple(out)

    def example_inputs(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, ...]:
        return self.example

    def forward_module(self) -> nn.Module:
        return self.forward_module_of(self.model)

    def forward_module_of(self, model: nn.Module) -> nn.Module:
        return OutputTensor(model)

    supports_shrinking = False
    """Channel levels change the next layer's input, so models at arbitrary levels cannot be built
    generically: no calibration anchors, the prediction is ``dense - sum of dense units + sum``."""

    def shrink_to_levels(self, levels: Mapping[str, int]) -> nn.Module:
        raise UnsupportedModelError("generic models are cut by the pruning backends, not by level shrinking")

    def shrink(self, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        raise UnsupportedModelError("generic models have no heads or neurons to remove; use weight-sparsity levels")

    def kept_shape(self, model: nn.Module) -> dict[str, dict[str, int | None]]:
        raise UnsupportedModelError("generic models have no head or neuron shape to record")

    def timed(self, model: nn.Module, shape: Shape) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        prefill_only(shape, "generic")
        return self.forward_module_of(model), self.example

    def workloads(
        self,
        units: Sequence[Unit],
        shape: Shape,
        *,
        runtime: str,
        device: str,
        dtype: torch.dtype,
    ) -> list[UnitWorkload]:
        prefill_only(shape, "generic")
        modules = dict(self._layers)
        out: list[UnitWorkload] = []
        done: set[str] = set()
        for unit in units:
            if unit.signature in done:
                continue
            done.add(unit.signature)
            module = modules[unit.name]
            x = (self._inputs[unit.name],)
            for level in unit.levels:
                sig, idx = unit.signature, level.index
                if level.structure == "dense":
                    out.append(UnitWorkload(sig, idx, "dense", copy.deepcopy(module), x))
                elif level.structure == "channels":
                    assert level.kept is not None
                    out.append(UnitWorkload(sig, idx, "shrunk", _fewer_outputs(module, level.kept), x))
                else:
                    mask = weight_mask(module.weight, level)
                    masked = _masked(module, mask)
                    out.append(UnitWorkload(sig, idx, "masked", masked, x))
                    linear = isinstance(module, nn.Linear)
                    if (
                        linear
                        and level.structure == "unstructured"
                        and runtime == "torch"
                        and device == "cpu"
                        and dtype == torch.float32
                    ):
                        out.append(UnitWorkload(sig, idx, "csr", CSRLinear(masked.weight, masked.bias), x))
                    if (
                        linear
                        and level.structure == "2:4"
                        and runtime == "torch"
                        and semi_structured_supported(tuple(module.weight.shape), dtype, device)
                    ):  # pragma: no cover - needs CUDA
                        semi = SemiStructuredLinear(module.weight.to(device=device, dtype=dtype), module.bias)
                        out.append(UnitWorkload(sig, idx, "semi_structured", semi, x))
        return out
