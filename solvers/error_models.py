"""Error models that turn per-unit coefficients into error arrays for the DP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers._validation import FloatArrays, as_unit_arrays


def spdy_prior(level_counts: Sequence[int]) -> list[NDArray[np.float64]]:
    """SPDY's shared error curve ``eps(i) = (i / (n - 1)) ** 2`` over level rank i, per unit.

    Level 0 (dense) has error 0 and the most compressed level error 1. A unit with one level gets [0].
    """
    curves = []
    for count in level_counts:
        if count < 1:
            raise ValueError(f"every unit needs at least one level; got a unit with {count}.")
        rank = np.arange(count, dtype=np.float64)
        curves.append((rank / max(count - 1, 1)) ** 2)
    return curves


def scaled_errors(coefficients: ArrayLike, curves: Sequence[NDArray[np.float64]]) -> list[NDArray[np.float64]]:
    """Per-unit errors ``e[l] = c_l * curve[l]`` (shape: one array of n_l levels per unit)."""
    coeffs = np.asarray(coefficients, dtype=np.float64)
    if coeffs.shape != (len(curves),):
        raise ValueError(f"need one coefficient per unit ({len(curves)}); got shape {coeffs.shape}.")
    return [float(c) * curve for c, curve in zip(coeffs, curves, strict=True)]


def normalised_curves(errors: Sequence[ArrayLike]) -> list[NDArray[np.float64]]:
    """Scale each unit's error table to [0, 1] (divide by its max) so a search coefficient can weight it.

    Used when a backend supplies measured errors (Fisher mass, calibration loss) instead of the prior.
    A unit whose errors are all <= 0 keeps a zero curve.
    """
    curves = []
    for err in errors:
        arr = np.clip(np.asarray(err, dtype=np.float64), 0.0, None)
        top = float(arr.max()) if arr.size else 0.0
        curves.append(arr / top if top > 0 else np.zeros_like(arr))
    return curves


def error_curves(curves: Sequence[ArrayLike] | None, costs: FloatArrays) -> FloatArrays:
    """Per-unit error curves for ``costs`` (validated, one value per level), or SPDY's prior when
    ``curves`` is None. Raises ``ValueError`` when the shapes differ."""
    if curves is None:
        return spdy_prior([c.size for c in costs])
    unit_curves, _ = as_unit_arrays(curves, curves)
    if [c.size for c in unit_curves] != [c.size for c in costs]:
        raise ValueError("'curves' must have one value per level of every unit, like 'costs_ms'.")
    return unit_curves
