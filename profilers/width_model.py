"""What a unit costs inside a memory-bound forward pass: a line in its width per kind, fitted to whole models.

Where a pass reads every weight for a handful of tokens (decode at a small batch; ``profilers.context``
says when), a unit costs what it streams from memory plus what each call costs: bytes are linear in
the heads, key/value groups and neurons it keeps, and the calls go when it is emptied. So here

    predicted_ms = fixed_ms + sum over units of  present x c[kind, "present"]
                                               + kept    x c[kind, "kept"]      (per head / neuron / channel)
                                               + groups  x c[kind, "groups"]    (per key/value group, GQA)

with every ``c >= 0`` (so no unit gets cheaper by growing) fitted by least squares to whole models
timed end to end. Standalone times do not enter: timed alone a unit's weights sit in cache, and on
SmolLM2 decode at KV 512 (2 CPU cores) they put an MLP at 256 neurons below one at 128 once multiplied
by a ratio by removed share; the search took that step in 25 of 30 layers and its 3x plan measured
19-26% below its prediction, losing to uniform at equal measured speed (benchmarks/RESULTS.md,
2026-12-07). Fitted to the same profile's anchors plus three that empty one kind in alternate layers,
this model priced held-out models with blocks removed within 4% and layers removed within 3%, where
the ratio model erred by 15% / 7% (benchmarks/RESULTS.md, 2026-12-07, eighteenth session).

Presence must vary by kind among the anchors, or its cost cannot be told from the fixed part (every
kind emptied at once in the same anchors): ``planner.stages.profile.measure`` times anchors that empty
one kind in alternate layers. A weight-sparsity level (no width) costs its unit's dense cost in
context times its standalone time over the dense one's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

TERMS = ("present", "kept", "groups")
"""Per kind: a cost per unit that keeps anything, per head / neuron / channel kept, per key/value group kept."""


@dataclass(frozen=True)
class UnitWidths:
    """One unit's levels as the width model reads them, dense first.

    Attributes:
        kind: "attention", "ffn", "linear" or "conv2d".
        kept: (n_levels,) heads / neurons / channels kept; NaN for weight-sparsity levels.
        groups: (n_levels,) key/value groups kept (grouped-query attention); NaN where not recorded.
        standalone_ms: (n_levels,) standalone times (ms), which price weight-sparsity levels only.
    """

    kind: str
    kept: np.ndarray
    groups: np.ndarray
    standalone_ms: np.ndarray

    def features(self, terms: Sequence[tuple[str, str]]) -> np.ndarray:
        """(n_levels, len(terms)) counts of each (kind, term) at each level (zero for other kinds)."""
        kept = np.asarray(self.kept, dtype=np.float64)
        groups = np.nan_to_num(np.asarray(self.groups, dtype=np.float64), nan=0.0)
        own = {"present": (kept > 0).astype(np.float64), "kept": kept, "groups": groups}
        out = np.zeros((kept.size, len(terms)))
        for j, (kind, term) in enumerate(terms):
            if kind == self.kind:
                out[:, j] = own[term]
        sparse = ~np.isfinite(kept)
        if sparse.any():
            dense = out[0] if np.isfinite(kept[0]) else np.zeros(len(terms))
            standalone = np.asarray(self.standalone_ms, dtype=np.float64)
            share = standalone[sparse] / standalone[0] if standalone[0] > 0 else np.ones(int(sparse.sum()))
            out[sparse] = share[:, None] * dense[None, :]
        return out


def model_terms(units: Sequence[UnitWidths]) -> list[tuple[str, str]]:
    """The (kind, term) pairs these units can vary: per kind "present" and "kept", "groups" where recorded."""
    out: list[tuple[str, str]] = []
    for kind in dict.fromkeys(u.kind for u in units):
        out += [(kind, "present"), (kind, "kept")]
        if any(np.isfinite(np.asarray(u.groups, dtype=np.float64)).any() for u in units if u.kind == kind):
            out.append((kind, "groups"))
    return out


@dataclass(frozen=True)
class WidthModel:
    """``fixed_ms`` plus, per unit, its kind's costs (``costs``: "kind/term" -> ms per unit, head, group
    or neuron) times what it keeps; see the module docstring."""

    fixed_ms: float
    costs: Mapping[str, float]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.fixed_ms) and self.fixed_ms >= 0):
            raise ValueError("a width model's fixed part must be finite and non-negative")
        for key, value in self.costs.items():
            kind, _, term = key.partition("/")
            if not kind or term not in TERMS:
                raise ValueError(f"a width model's cost {key!r} must be named 'kind/term' with a term in {TERMS}")
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"a width model's cost {key!r} must be finite and non-negative; got {value}")

    def unit_costs(self, units: Sequence[UnitWidths]) -> list[np.ndarray]:
        """Per unit, each level's cost in context (ms), shape (n_levels,)."""
        terms = [(kind, term) for kind, _, term in (key.partition("/") for key in self.costs)]
        coefficients = np.asarray(list(self.costs.values()), dtype=np.float64)
        return [unit.features(terms) @ coefficients for unit in units]

    @classmethod
    def fit(cls, units: Sequence[UnitWidths], anchors: Sequence[tuple[Sequence[int], float]]) -> WidthModel | None:
        """Fit to whole models timed end to end; None where they are too few to check the fit.

        Args:
            units: every unit, in table order.
            anchors: (one level per unit, measured end-to-end ms) for each whole model timed.
        Returns None with fewer anchors than the unknowns (the fixed part and each term) plus two.
        """
        terms = model_terms(units)
        if len(anchors) < len(terms) + 3:
            return None
        per_unit = [u.features(terms) for u in units]
        design = np.zeros((len(anchors), len(terms) + 1))
        design[:, 0] = 1.0
        for row, (levels, _) in enumerate(anchors):
            for features, level in zip(per_unit, levels, strict=True):
                design[row, 1:] += features[level]
        # Scale the columns so that counts of thousands of neurons and of a few units weigh alike.
        scale = np.abs(design).max(axis=0)
        scale[scale == 0] = 1.0
        solution, _ = nnls(design / scale, np.asarray([total for _, total in anchors], dtype=np.float64))
        solution = solution / scale
        costs = {f"{kind}/{term}": float(c) for (kind, term), c in zip(terms, solution[1:], strict=True)}
        return cls(float(solution[0]), costs)

    def describe(self) -> str:
        """One line: the fixed part and each kind's costs."""
        units = {"present": "unit", "kept": "kept", "groups": "group"}
        parts = []
        for kind in dict.fromkeys(key.split("/", 1)[0] for key in self.costs):
            terms = [
                f"{self.costs[f'{kind}/{term}']:.4g} ms/{units[term]}"
                for term in TERMS
                if f"{kind}/{term}" in self.costs
            ]
            parts.append(f"{kind} {' + '.join(terms)}")
        return f"fixed {self.fixed_ms:.2f} ms; " + "; ".join(parts)
