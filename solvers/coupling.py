"""Layer shells: a cost two units share, paid unless both are removed (then the layer is skipped).

A pre-norm decoder layer is more than its attention and MLP blocks: its two norms, two residual adds
and, in eager decode on a CPU, the framework's per-layer work cost time too. Units are timed without
them (``latency_ms``), so that time sits in the calibration curve, spread over every plan alike.
When both of a layer's units are at their removed level the layer is skipped whole and its shell is
saved as well (depth pruning). That saving is not additive in the units, so an additive solver
cannot see it: on SmolLM2 decode (b1, KV 512, 2 CPU cores) the shells were about a third of the
dense model's time, and plans with skipped layers measured up to 1.3x their additive prediction.

A ``Coupling`` names the two units, their removed levels and the shell (ms, in the table's summed
unit time). ``merge`` turns each coupled pair into one unit whose levels are every pair of levels,
costing ``cost_a + cost_b + shell`` unless both are removed; that problem is additive again, so the
DP solves it exactly, and ``split`` maps its answer back to one level per original unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArrays = list[NDArray[np.float64]]


@dataclass(frozen=True)
class Coupling:
    """Units ``first`` and ``second`` (indices) share a shell of ``shell_ms``, saved only when they are
    at ``first_removed`` and ``second_removed`` together."""

    first: int
    first_removed: int
    second: int
    second_removed: int
    shell_ms: float


@dataclass(frozen=True)
class Merged:
    """The additive problem after merging: per merged unit its level costs and errors, and for each
    merged unit the original units and level pairs it stands for."""

    costs: FloatArrays
    errors: FloatArrays
    members: tuple[tuple[int, ...], ...]
    """Per merged unit: the original unit indices (one, or the coupled pair)."""
    pairs: tuple[NDArray[np.int64] | None, ...]
    """Per merged unit: (levels, 2) level pairs of a coupled pair, None for a single unit."""


def check_couplings(couplings: Sequence[Coupling], sizes: Sequence[int]) -> None:
    """Refuse couplings that name missing units or levels, reuse a unit, or have a negative shell."""
    seen: set[int] = set()
    for c in couplings:
        for unit, level in ((c.first, c.first_removed), (c.second, c.second_removed)):
            if not 0 <= unit < len(sizes) or not 0 <= level < sizes[unit]:
                raise ValueError(f"coupling {c} names unit {unit} level {level}, which the costs do not have.")
            if unit in seen:
                raise ValueError(f"unit {unit} is in more than one coupling; a unit belongs to one layer.")
            seen.add(unit)
        if c.first == c.second:
            raise ValueError(f"coupling {c} couples a unit with itself.")
        if not (np.isfinite(c.shell_ms) and c.shell_ms >= 0):
            raise ValueError(f"coupling {c}: the shell must be a finite number of ms >= 0.")


def shells_paid(couplings: Sequence[Coupling], levels: Sequence[int]) -> float:
    """The summed shells of the layers ``levels`` keeps (ms): every coupling not at both removed levels."""
    return float(
        sum(
            c.shell_ms
            for c in couplings
            if not (levels[c.first] == c.first_removed and levels[c.second] == c.second_removed)
        )
    )


def merge(costs: FloatArrays, errors: FloatArrays, couplings: Sequence[Coupling]) -> Merged:
    """The additive problem whose merged units are the coupled pairs (at the first unit's position)."""
    check_couplings(couplings, [c.size for c in costs])
    by_first = {c.first: c for c in couplings}
    seconds = {c.second for c in couplings}
    out_costs: FloatArrays = []
    out_errors: FloatArrays = []
    members: list[tuple[int, ...]] = []
    pairs: list[NDArray[np.int64] | None] = []
    for unit in range(len(costs)):
        if unit in seconds:
            continue
        coupling = by_first.get(unit)
        if coupling is None:
            out_costs.append(costs[unit])
            out_errors.append(errors[unit])
            members.append((unit,))
            pairs.append(None)
            continue
        a, b = coupling.first, coupling.second
        grid = np.stack(np.meshgrid(np.arange(costs[a].size), np.arange(costs[b].size), indexing="ij"), -1)
        grid = grid.reshape(-1, 2)
        cost = costs[a][grid[:, 0]] + costs[b][grid[:, 1]]
        skipped = (grid[:, 0] == coupling.first_removed) & (grid[:, 1] == coupling.second_removed)
        out_costs.append(cost + np.where(skipped, 0.0, coupling.shell_ms))
        out_errors.append(errors[a][grid[:, 0]] + errors[b][grid[:, 1]])
        members.append((a, b))
        pairs.append(grid.astype(np.int64))
    return Merged(out_costs, out_errors, tuple(members), tuple(pairs))


def split(merged: Merged, levels: Sequence[int], units: int) -> list[int]:
    """One level per original unit from one level per merged unit."""
    out = [0] * units
    for members, pairs, level in zip(merged.members, merged.pairs, levels, strict=True):
        if pairs is None:
            out[members[0]] = int(level)
        else:
            out[members[0]], out[members[1]] = (int(x) for x in pairs[int(level)])
    return out
