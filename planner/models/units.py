"""Units (what can be pruned) and their candidate levels.

Level 0 is always the dense level; higher indices compress more. Kinds:
- ``attention``: heads kept H, H-1, ..., 0 (0 removes the block's computation; its output bias stays).
- ``ffn``: neurons kept N, N - step, ..., 0 on a grid.
- ``linear`` / ``conv2d``: dense, unstructured sparsity 40%..99% (geometric in density), 2:4, and
  output-channel keep ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRUCTURES = ("dense", "heads", "neurons", "channels", "unstructured", "2:4")


@dataclass(frozen=True)
class Level:
    """One candidate level of a unit.

    Attributes:
        index: position in the unit's level list (0 = dense).
        structure: "dense", "heads", "neurons", "channels", "unstructured" or "2:4".
        kept: heads / neurons / output channels kept (structured levels and dense), else None.
        sparsity: fraction of weights set to zero (weight-sparsity levels and dense = 0), else None.
    """

    index: int
    structure: str
    kept: int | None = None
    sparsity: float | None = None

    @property
    def label(self) -> str:
        if self.structure == "dense":
            return "dense"
        if self.structure in ("heads", "neurons", "channels"):
            return f"{self.kept} {self.structure}"
        if self.structure == "2:4":
            return "2:4"
        return f"{100 * (self.sparsity or 0.0):.1f}% sparse"


@dataclass(frozen=True)
class Unit:
    """A prunable unit of a model.

    Attributes:
        name: unit name (module path; ``.ffn`` names an FFN block of a layer).
        kind: "attention", "ffn", "linear" or "conv2d".
        levels: candidate levels, dense first.
        signature: units with equal signatures have the same shapes and share measurements.
        size: heads H / neurons N / output channels of the dense unit.
    """

    name: str
    kind: str
    levels: tuple[Level, ...]
    signature: str
    size: int

    def compression(self) -> np.ndarray:
        """Per level, the fraction compressed in [0, 1] (removed units, or weight sparsity); (n,)."""
        out = []
        for level in self.levels:
            if level.kept is not None and level.structure != "dense":
                out.append(1.0 - level.kept / self.size)
            else:
                out.append(float(level.sparsity or 0.0))
        return np.asarray(out)


def head_levels(num_heads: int) -> tuple[Level, ...]:
    """Heads kept H..0: level i keeps H - i heads."""
    return tuple(Level(i, "dense" if i == 0 else "heads", kept=num_heads - i) for i in range(num_heads + 1))


def default_ffn_step(size: int) -> int:
    """A grid step (a multiple of 8 when possible) giving about 24-32 FFN levels."""
    step = max(1, size // 24)
    if step >= 8:
        step -= step % 8
    return step


def neuron_levels(size: int, step: int) -> tuple[Level, ...]:
    """Neurons kept N, N - step, ..., down to 0 (0 is always included)."""
    if step < 1:
        raise ValueError(f"The FFN grid step must be >= 1. Got {step} instead.")
    kept = [*range(size, 0, -step), 0]
    return tuple(Level(i, "dense" if i == 0 else "neurons", kept=k) for i, k in enumerate(kept))


def sparsity_grid(count: int, low: float = 0.4, high: float = 0.99) -> list[float]:
    """``count`` sparsities from ``low`` to ``high``, geometric in density (1 - sparsity), as in SPDY."""
    if count < 1:
        return []
    if count == 1:
        return [low]
    densities = np.geomspace(1.0 - low, 1.0 - high, count)
    return [round(float(1.0 - d), 6) for d in densities]


def weight_levels(
    out_features: int,
    *,
    sparsity_levels: int,
    two_four: bool,
    channel_ratios: tuple[float, ...],
) -> tuple[Level, ...]:
    """Levels for a generic Linear/Conv2d: dense, unstructured sparsities, 2:4, channel keep ratios."""
    levels = [Level(0, "dense", kept=out_features, sparsity=0.0)]
    for s in sparsity_grid(sparsity_levels):
        levels.append(Level(len(levels), "unstructured", sparsity=s))
    if two_four:
        levels.append(Level(len(levels), "2:4", sparsity=0.5))
    for ratio in channel_ratios:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"channel keep ratios must be in (0, 1); got {ratio}")
        kept = max(1, math.floor(ratio * out_features))
        levels.append(Level(len(levels), "channels", kept=kept))
    return tuple(levels)
