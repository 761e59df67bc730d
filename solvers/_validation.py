"""Input checks shared by every solver: clear ``ValueError`` messages that name the unit and the fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArrays = list[NDArray[np.float64]]


def as_unit_arrays(costs_ms: Sequence[ArrayLike], errors: Sequence[ArrayLike]) -> tuple[FloatArrays, FloatArrays]:
    """Validate per-unit cost and error arrays and return float64 copies.

    Args:
        costs_ms: one 1-D array per unit, the latency (ms) of each of its levels; finite and >= 0.
        errors: one 1-D array per unit, the estimated loss of each level; finite (may be negative).

    Returns:
        (costs, errors) as lists of float64 arrays; the caller's objects are never modified.
    """
    if len(costs_ms) != len(errors):
        raise ValueError(
            f"costs_ms has {len(costs_ms)} units but errors has {len(errors)}; "
            "pass one cost array and one error array per unit."
        )
    if len(costs_ms) == 0:
        raise ValueError("There are no units to solve for; pass at least one unit's costs and errors.")
    costs_out: FloatArrays = []
    errors_out: FloatArrays = []
    for unit, (cost, error) in enumerate(zip(costs_ms, errors, strict=True)):
        c = np.array(cost, dtype=np.float64, copy=True)
        e = np.array(error, dtype=np.float64, copy=True)
        if c.ndim != 1 or e.ndim != 1:
            raise ValueError(
                f"unit {unit}: costs and errors must be 1-D arrays over levels; got shapes {c.shape} and {e.shape}."
            )
        if c.size == 0:
            raise ValueError(f"unit {unit} has no levels; give every unit at least its dense level.")
        if c.size != e.size:
            raise ValueError(f"unit {unit}: {c.size} costs but {e.size} errors; give one error per level.")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"unit {unit}: costs contain NaN or infinity ({c.tolist()}); re-measure the unit.")
        if np.any(c < 0):
            raise ValueError(f"unit {unit}: costs must be >= 0 ms; got {c.tolist()}.")
        if not np.all(np.isfinite(e)):
            raise ValueError(
                f"unit {unit}: errors contain NaN or infinity ({e.tolist()}); "
                "drop that level or give it a large finite error."
            )
        costs_out.append(c)
        errors_out.append(e)
    return costs_out, errors_out


def as_cost_arrays(costs_ms: Sequence[ArrayLike]) -> FloatArrays:
    """``costs_ms`` validated as by ``as_unit_arrays`` (finite, >= 0, one array per unit, none empty)."""
    costs, _ = as_unit_arrays(costs_ms, [np.zeros(np.asarray(c).size) for c in costs_ms])
    return costs


# Budget comparisons tolerate float round-off in sums of many costs, and a budget computed as
# dense / max_speedup that comes back a rounding error below the fastest plan (ms).
BUDGET_SLACK_MS = 1e-9


def check_budget(budget_ms: float) -> float:
    """Return ``budget_ms`` as float if it is finite and > 0, else raise ``ValueError``."""
    value = float(budget_ms)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"The 'budget_ms' parameter must be a finite number > 0. Got {budget_ms!r} instead.")
    return value


def check_buckets(buckets: int) -> int:
    """Return ``buckets`` if it is an integer >= 1, else raise ``ValueError``."""
    if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 1:
        raise ValueError(f"The 'buckets' parameter must be an integer >= 1. Got {buckets!r} instead.")
    return int(buckets)
