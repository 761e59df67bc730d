"""Optional monotone smoothing of a unit's latency curve (the raw values are kept beside it)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def non_increasing_fit(values: ArrayLike) -> NDArray[np.float64]:
    """Least-squares non-increasing fit (isotonic regression by pool-adjacent-violators).

    Args:
        values: latencies over levels ordered from least to most compressed, shape (n,).

    Returns:
        Shape (n,): the closest (in squared error) sequence with ``out[i] >= out[i + 1]``.
    """
    y = np.asarray(values, dtype=np.float64)
    blocks: list[list[float]] = []  # [mean, weight]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            mean2, w2 = blocks.pop()
            mean1, w1 = blocks[-1]
            blocks[-1] = [(mean1 * w1 + mean2 * w2) / (w1 + w2), w1 + w2]
    return np.concatenate([np.full(int(w), m) for m, w in blocks]) if blocks else y.copy()
