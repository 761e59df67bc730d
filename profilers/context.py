"""What a unit costs inside the whole model: its standalone time times a ratio that depends on how thin it is.

Units are timed standalone, each on its own and repeatedly, so a unit's weights stay in cache and
it pays setup (masks, position tables) that a real forward pass shares. Inside the model the weights
stream from memory, and the ratio between the two is not one constant: on SmolLM2 decode (2 CPU
cores) a dense unit cost about 1.4x its standalone time in context, one at a quarter of its time
2x, a nearly empty one 5x. The calibration curve (``profilers.calibration``) maps the *sum* of
standalone times through whole models in which every unit is equally thin; a plan of dense layers
and skipped ones is off that curve, and the curve under-priced it by up to 26% (benchmarks/RESULTS.md,
2026-12-05).

The model here stays additive in the units, so the solver plans with it directly:

    predicted_ms = fixed_ms + sum over units of latency_ms[unit, level] x r(removed share)

where ``removed share = 1 - latency_ms[unit, level] / latency_ms[unit, dense]`` (0 for the dense
level, near 1 for an empty one) and ``r`` is piecewise linear through ``KNOTS``. ``fixed_ms`` and
the ratios at the knots are fitted, non-negative, by least squares to the same whole models the
curve goes through (the anchors).

Where a forward pass reads every weight for a handful of tokens (decode at a small batch: at most
``MEMORY_BOUND_TOKENS``), the model is memory-bound and a unit's standalone times (weights in cache,
the kernel's own steps) mislead in any multiple: there the table plans with ``profilers.width_model``
instead (basis "width": a line in width per kind, fitted to whole models). Schema-7 tables planned
memory-bound shapes with this model over each unit's standalone times straightened in width
(``width_line``, basis "width-line"); they keep the costs they were fitted with. Elsewhere (prefill,
large batches: compute-bound, where a kernel's steps are real in the model too) this model over the
standalone times themselves (basis "standalone").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

KNOTS = (0.0, 0.25, 0.5, 0.75, 0.85, 0.95)
"""Removed shares where the ratio is free; beyond the last it stays constant."""
MEMORY_BOUND_TOKENS = 16
"""A forward pass over at most this many tokens (batch x tokens per sequence) is memory-bound: fp32
weights give 0.5 FLOP per byte per token, and CPUs and GPUs need far more than 8 to be compute-bound."""
BASES = ("standalone", "width-line", "width")
"""How a table prices a unit in context: the ratio here over its standalone times, or over their line in
width (schema-7 memory-bound tables), or ``profilers.width_model``'s line in width per kind ("width")."""


def context_basis(phase: str, batch_size: int, seq_len: int) -> str:
    """ "width" where a forward pass is memory-bound (decode, or a prefill of very few tokens, over at most
    ``MEMORY_BOUND_TOKENS`` tokens), else "standalone"."""
    tokens = batch_size if phase == "decode" else batch_size * seq_len
    return "width" if tokens <= MEMORY_BOUND_TOKENS else "standalone"


def width_line(costs_ms: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """A unit's standalone times straightened in its width, shape (n_levels,) like ``costs_ms``.

    Args:
        costs_ms: per level, the standalone time (ms).
        kept: per level, the heads or neurons kept; NaN for levels that are not a width (weight
            sparsity), which keep their times, as do empty levels (0 kept).
    Returns the least-squares line ``a + b x kept`` with ``a, b >= 0`` through the width levels that
    keep anything; the times unchanged where fewer than three such levels pin a line down. Neither part
    can be negative in a memory-bound pass (bytes over bandwidth plus a per-call cost): a free line
    through SmolLM2's convex MLP times at KV 512 crossed zero at about 100 neurons and priced 320 neurons at
    15% of dense, which the search then chose in 29 of 30 layers (benchmarks/RESULTS.md, 2026-12-06).
    """
    costs = np.asarray(costs_ms, dtype=np.float64)
    width = np.asarray(kept, dtype=np.float64)
    fitted = np.isfinite(width) & (width > 0)
    if fitted.sum() < 3 or np.ptp(width[fitted]) == 0:
        return costs.copy()
    design = np.stack([np.ones(int(fitted.sum())), width[fitted]], axis=1)
    scale = design.max(axis=0)
    coefficients, _ = nnls(design / scale, costs[fitted])
    out = costs.copy()
    out[fitted] = design @ (coefficients / scale)
    return out


def removed_share(costs_ms: np.ndarray) -> np.ndarray:
    """Per level of one unit, ``1 - cost / dense cost`` clipped to [0, 1], shape (n_levels,)."""
    costs = np.asarray(costs_ms, dtype=np.float64)
    if costs[0] <= 0:
        return np.zeros_like(costs)
    return np.clip(1.0 - costs / costs[0], 0.0, 1.0)


def hat_weights(share: np.ndarray, knots: Sequence[float] = KNOTS) -> np.ndarray:
    """Linear-interpolation weights of each share over ``knots``, shape (n, len(knots)); rows sum to 1."""
    x = np.clip(np.asarray(share, dtype=np.float64), knots[0], knots[-1])
    grid = np.asarray(knots, dtype=np.float64)
    upper = np.clip(np.searchsorted(grid, x, side="left"), 1, len(grid) - 1)
    lower = upper - 1
    part = (x - grid[lower]) / (grid[upper] - grid[lower])
    weights = np.zeros((x.size, len(grid)))
    rows = np.arange(x.size)
    weights[rows, lower] = 1.0 - part
    weights[rows, upper] += part
    return weights


@dataclass(frozen=True)
class ContextModel:
    """``fixed_ms`` plus per unit ``basis_ms x r(removed share)``; ``ratios`` are r at ``knots``. The basis
    is the standalone times or their line in width (``BASES``); the caller passes the same one to ``fit``
    and to ``unit_costs``.

    ``fit`` keeps r non-decreasing in the removed share: in the model a thinner unit never costs less
    per standalone ms than a thicker one (its weights stream from memory and its fixed costs stay;
    the fits so far rose from dense to empty, 1.4 to 5.6 on SmolLM2 decode, 1.1 to 1.8 in prefill,
    with dips where the anchors pinned a knot poorly).
    Free, seven numbers fitted to ten anchors bend to whatever the anchors hold that a ratio by share
    cannot: two profiles of SmolLM2 decode at KV 512 put r at 2.0 / 2.8 at 0.75 and 1.0 / 0.0 at 0.85,
    pricing MLPs at 320 neurons nearly free, and the search put 29 of 30 MLPs there (a plan priced
    2.72x measured 2.00x; benchmarks/RESULTS.md, 2026-12-06)."""

    knots: tuple[float, ...]
    ratios: tuple[float, ...]
    fixed_ms: float

    def __post_init__(self) -> None:
        k, r = np.asarray(self.knots, float), np.asarray(self.ratios, float)
        if k.size < 2 or k.size != r.size or np.any(np.diff(k) <= 0) or not np.all(np.isfinite(r)) or np.any(r < 0):
            raise ValueError("a context model needs increasing knots and as many finite, non-negative ratios")
        if not (np.isfinite(self.fixed_ms) and self.fixed_ms >= 0):
            raise ValueError("a context model's fixed part must be finite and non-negative")

    def unit_costs(self, standalone_ms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per unit, each level's cost in context (ms), shape (n_levels,) like ``standalone_ms``."""
        out = []
        for costs in standalone_ms:
            c = np.asarray(costs, dtype=np.float64)
            out.append(c * (hat_weights(removed_share(c), self.knots) @ np.asarray(self.ratios)))
        return out

    @classmethod
    def fit(
        cls,
        standalone_ms: Sequence[np.ndarray],
        anchors: Sequence[tuple[Sequence[int], float]],
        knots: Sequence[float] = KNOTS,
    ) -> ContextModel | None:
        """Fit to whole models timed end to end; None where they cannot pin the model down.

        Args:
            standalone_ms: per unit (table order), the standalone time of each level (ms).
            anchors: (one level per unit, measured end-to-end ms) for each whole model timed.
            knots: removed shares where the ratio is free.
        A knot no anchor's unit sits near (a coarse level grid: two heads, four FFN widths) gets the
        ratio interpolated from its neighbours. Returns None with fewer anchors than the unknowns
        plus two (nothing left to check the fit against).
        """
        shares = [removed_share(c) for c in standalone_ms]
        rows, totals = [], []
        for levels, total_ms in anchors:
            row = np.zeros(len(knots) + 1)
            row[0] = 1.0
            for costs, share, level in zip(standalone_ms, shares, levels, strict=True):
                row[1:] += float(costs[level]) * hat_weights(share[level : level + 1], knots)[0]
            rows.append(row)
            totals.append(float(total_ms))
        design = np.asarray(rows)
        used = np.flatnonzero(design[:, 1:].sum(axis=0) > 0)
        if used.size == 0 or len(anchors) < used.size + 3:
            return None
        # r at the i-th used knot = the sum of non-negative steps 0..i (non-decreasing: see the class
        # docstring), so step j multiplies the ms weighted at knot j and every knot after it.
        steps = design[:, used + 1][:, ::-1].cumsum(axis=1)[:, ::-1]
        columns = np.column_stack([design[:, 0], steps])
        # Scale the columns so that the small ms sums near the empty end weigh like the others.
        scale = np.abs(columns).max(axis=0)
        solution, _ = nnls(columns / scale, np.asarray(totals))
        solution = solution / scale
        grid = np.asarray(knots, dtype=np.float64)
        ratios = np.interp(grid, grid[used], np.cumsum(solution[1:]))
        return cls(tuple(float(k) for k in knots), tuple(float(r) for r in ratios), float(solution[0]))

    def describe(self) -> str:
        """One line: the fixed part and the ratio at each knot."""
        ratios = ", ".join(f"{r:.2f} at {k:g}" for k, r in zip(self.knots, self.ratios, strict=True))
        return f"fixed {self.fixed_ms:.2f} ms; in-context / standalone {ratios} of a unit's time removed"
