"""Units (what can be pruned) and their candidate levels.

Level 0 is always the dense level; higher indices compress more. Kinds:
- ``attention``: query heads kept (H, H-1, ..., 0 for multi-head attention). With grouped-query
  attention (K key/value groups of H/K query heads each) a level keeps ``groups`` whole KV groups
  and the same number of query heads in each (``kept`` = groups x heads per group); 0 removes the
  block's computation (its output bias, if any, stays).
- ``ffn``: FFN / MLP neurons kept N, N - step, ..., 0 on a grid.
- ``linear`` / ``conv2d``: dense, unstructured sparsity 40%..99% (geometric in density), 2:4, and
  output-channel keep ratios.

A unit knows its layer and the module paths it owns (``modules``: role -> path), so no caller ever
parses a unit name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

STRUCTURES = ("dense", "heads", "neurons", "channels", "unstructured", "2:4")
KINDS = ("attention", "ffn", "linear", "conv2d")


@dataclass(frozen=True)
class Level:
    """One candidate level of a unit.

    Attributes:
        index: position in the unit's level list (0 = dense).
        structure: "dense", "heads", "neurons", "channels", "unstructured" or "2:4".
        kept: heads / neurons / output channels kept (structured levels and dense), else None.
        sparsity: fraction of weights set to zero (weight-sparsity levels and dense = 0), else None.
        groups: key/value groups kept (attention with grouped-query attention), else None.
    """

    index: int
    structure: str
    kept: int | None = None
    sparsity: float | None = None
    groups: int | None = None

    @property
    def label(self) -> str:
        if self.structure == "dense":
            return "dense"
        if self.structure == "heads" and self.groups is not None:
            per_group = (self.kept or 0) // self.groups if self.groups else 0
            return f"{self.groups} groups x {per_group} heads"
        if self.structure in ("heads", "neurons", "channels"):
            return f"{self.kept} {self.structure}"
        if self.structure == "2:4":
            return "2:4"
        return f"{100 * (self.sparsity or 0.0):.1f}% sparse"


@dataclass(frozen=True)
class Unit:
    """A prunable unit of a model.

    Attributes:
        name: unit name (a module path; ``.ffn`` names the FFN of a BERT layer).
        kind: "attention", "ffn", "linear" or "conv2d".
        levels: candidate levels, dense first.
        signature: units with equal signatures have the same shapes and share measurements.
        size: heads H / neurons N / output channels of the dense unit.
        layer: index of the transformer layer the unit belongs to (None for generic layers).
        groups: key/value groups of an attention unit (H for multi-head attention), else None.
        modules: role -> module path of the weights the unit owns, e.g. {"query": ..., "output": ...}
            for attention, {"up": ..., "down": ...} for an FFN, {"weight": ...} for a generic layer.
    """

    name: str
    kind: str
    levels: tuple[Level, ...]
    signature: str
    size: int
    layer: int | None = None
    groups: int | None = None
    modules: Mapping[str, str] = field(default_factory=dict)

    def compression(self) -> np.ndarray:
        """Per level, the fraction compressed in [0, 1] (removed units, or weight sparsity); (n,)."""
        out = []
        for level in self.levels:
            if level.kept is not None and level.structure != "dense":
                out.append(1.0 - level.kept / self.size)
            else:
                out.append(float(level.sparsity or 0.0))
        return np.asarray(out)

    @property
    def heads_per_group(self) -> int:
        """Query heads per key/value group (1 for multi-head attention)."""
        return self.size // self.groups if self.groups else 1


def head_levels(num_heads: int) -> tuple[Level, ...]:
    """Multi-head attention: heads kept H..0, level i keeps H - i heads."""
    return tuple(Level(i, "dense" if i == 0 else "heads", kept=num_heads - i) for i in range(num_heads + 1))


def grouped_head_levels(groups: int, heads_per_group: int) -> tuple[Level, ...]:
    """Grouped-query attention: every (groups kept g, query heads per group q), g in K..1 and q in Q..1,
    ordered by query heads kept (then by groups, more first), then 0 (block removed)."""
    if groups < 1 or heads_per_group < 1:
        raise ValueError(f"need >= 1 group and >= 1 head per group; got {groups} and {heads_per_group}")
    pairs = sorted(
        ((g, q) for g in range(groups, 0, -1) for q in range(heads_per_group, 0, -1)),
        key=lambda p: (-p[0] * p[1], -p[0]),
    )
    levels = [Level(i, "dense" if i == 0 else "heads", kept=g * q, groups=g) for i, (g, q) in enumerate(pairs)]
    levels.append(Level(len(levels), "heads", kept=0, groups=0))
    return tuple(levels)


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


def first_kept(unit: Unit, level: Level) -> tuple[int, ...]:
    """The canonical choice of which heads / neurons a structured level keeps: the first ones (for
    grouped attention: the first ``q`` query heads of each of the first ``g`` groups). Which ones are
    kept does not change latency: profiling and latency checks use this."""
    kept = int(level.kept or 0)
    if unit.kind == "attention" and level.groups is not None:
        if level.groups == 0:
            return ()
        per_group = kept // level.groups
        q = unit.heads_per_group
        return tuple(g * q + h for g in range(level.groups) for h in range(per_group))
    return tuple(range(kept))


def check_grouped_keep(unit: Unit, keep: tuple[int, ...]) -> tuple[int, int]:
    """Validate kept query heads of a grouped-attention unit: the same number in every kept group.

    Returns:
        (groups kept, query heads per kept group).

    Raises:
        ValueError: naming the unit and what is wrong.
    """
    q = unit.heads_per_group
    per: dict[int, int] = {}
    for head in keep:
        if not 0 <= head < unit.size:
            raise ValueError(f"{unit.name}: query head {head} is not in 0..{unit.size - 1}")
        per[head // q] = per.get(head // q, 0) + 1
    counts = set(per.values())
    if len(counts) > 1:
        raise ValueError(
            f"{unit.name}: grouped-query attention keeps the same number of query heads in every kept group; "
            f"got {dict(sorted(per.items()))} heads per group"
        )
    return len(per), (counts.pop() if counts else 0)


def level_index(unit: Unit, kept: int, groups: int | None = None) -> int:
    """The level of ``unit`` keeping ``kept`` units (and ``groups`` KV groups for grouped attention)."""
    for level in unit.levels:
        if level.kept == kept and (groups is None or level.groups is None or level.groups == groups):
            return level.index
    raise ValueError(f"{unit.name} has no level keeping {kept} (groups {groups})")


def levels_by_name(units: tuple[Unit, ...] | list[Unit], levels: Mapping[str, int]) -> dict[str, Level]:
    """unit name -> chosen ``Level`` (for a mapping unit name -> level index)."""
    by_name = {u.name: u for u in units}
    return {name: by_name[name].levels[index] for name, index in levels.items()}
