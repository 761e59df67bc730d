"""LoRA adapters for recovery where full fine-tuning does not fit in memory (``--recover-lora R``).

``peft`` injects rank-``R`` adapters (``W x + (alpha / R) B A x``, alpha = 2R, B zero at the start so
the model starts exactly as pruned) into every linear layer of the transformer blocks, in place:
the model keeps its class, so the task's forward pass and the fitted head see the same module. Only
the adapters train (gradients and AdamW moments of a few MB instead of 4 copies of the model). Before
the model leaves recovery the adapters are merged into the weights and removed (``merge_lora``):
shapes and module types are those of the pruned model, so the timing is unchanged.

Output heads (``lm_head``, ``classifier``, ``score``, the pooler) get no adapter, and neither does a
linear layer pruned to zero width (a layer whose heads or neurons were all removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from planner.errors import PlannerError

HEAD_NAMES = ("lm_head", "classifier", "score", "pooler")
"""Module-name parts that mark output heads: no adapter there."""


def lora_targets(model: nn.Module) -> list[str]:
    """Full names of the linear layers that get an adapter (see the module docstring)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module.in_features > 0
        and module.out_features > 0
        and not any(part in HEAD_NAMES for part in name.split("."))
    ]


@dataclass(frozen=True)
class LoraAdapters:
    """What ``add_lora`` did: how many adapter parameters train, and which of the model's own
    parameters were frozen before (they stay frozen after ``merge_lora``)."""

    trainable: int
    frozen_before: frozenset[int]
    """``id`` of every parameter that did not require gradients before the adapters went in."""


def add_lora(model: nn.Module, rank: int) -> LoraAdapters:
    """Inject rank-``rank`` adapters into ``model`` in place and freeze everything else.

    Raises:
        PlannerError: peft is not installed (names the extra), or the model has no linear layer to adapt.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise PlannerError(
            "--recover-lora needs peft: pip install 'latency-planner[lora]' (or pip install peft)."
        ) from None
    targets = lora_targets(model)
    if not targets:
        raise PlannerError("--recover-lora: the model has no linear layer to adapt; recover without --recover-lora.")
    frozen = frozenset(id(p) for p in model.parameters() if not p.requires_grad)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, bias="none")
    inject_adapter_in_model(config, model)
    trainable = 0
    for name, parameter in model.named_parameters():
        adapter = "lora_" in name
        parameter.requires_grad_(adapter)
        trainable += parameter.numel() if adapter else 0
    return LoraAdapters(trainable, frozen)


def merge_lora(model: nn.Module, adapters: LoraAdapters) -> nn.Module:
    """Fold every adapter into its layer's weight and put the plain layer back (in place); each
    parameter requires gradients again as it did before ``add_lora``."""
    from peft.tuners.lora import LoraLayer

    replaced: list[tuple[str, Any]] = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in replaced:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) not in adapters.frozen_before)
    return model
