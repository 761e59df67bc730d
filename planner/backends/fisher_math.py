"""Pure array kernels of post-training Fisher pruning (Kwon et al., NeurIPS 2022).

Everything here works on numpy arrays; the backend (``fisher.py``) gathers the arrays from a model.
Shapes: ``grads`` is (batches, units) -- one gradient of the loss with respect to each unit's mask
per calibration mini-batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def diagonal_fisher(grads: np.ndarray) -> np.ndarray:
    """Empirical Fisher diagonal ``I_i = sum_b g_{b,i}^2``: (batches, units) -> (units,)."""
    g = np.asarray(grads, dtype=np.float64)
    return np.einsum("bu,bu->u", g, g)


def removal_errors(fisher: np.ndarray, kept_per_level: Sequence[int]) -> np.ndarray:
    """Estimated loss increase ``1/2 * sum of the removed units' Fisher`` per level, when each level
    keeps its ``kept`` most important units: (units,), [n_levels] -> (n_levels,)."""
    ascending = np.sort(np.asarray(fisher, dtype=np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(ascending)])
    total = fisher.size
    return np.array([0.5 * prefix[total - int(k)] for k in kept_per_level])


def block_objective(grads: np.ndarray, removed: Sequence[int]) -> float:
    """``|| sum_{j in removed} v_j ||^2`` with v_j the per-batch gradients of unit j (block Fisher)."""
    if len(removed) == 0:
        return 0.0
    v = np.asarray(grads, dtype=np.float64)[:, list(removed)].sum(axis=1)
    return float(v @ v)


def rearrange(grads: np.ndarray, n_removed: int) -> list[int]:
    """Choose which ``n_removed`` units of one block to remove, minimising the block objective.

    Greedy single pass (counts, hence latency, unchanged): start with the ``n_removed`` least
    important units (diagonal Fisher); then for every other unit in ascending importance, add it
    and drop the member whose removal leaves the smallest objective (possibly the one just added).

    Args:
        grads: (batches, units) per-batch mask gradients of one block (one layer's heads or neurons).
        n_removed: how many units to remove, 0..units.

    Returns:
        Sorted indices of the removed units; the objective is never above the starting set's.
    """
    g = np.asarray(grads, dtype=np.float64)
    units = g.shape[1]
    if not 0 <= n_removed <= units:
        raise ValueError(f"n_removed must be in 0..{units}; got {n_removed}")
    if n_removed in (0, units):
        return list(range(units)) if n_removed else []
    order = np.argsort(diagonal_fisher(g), kind="stable")
    removed = [int(i) for i in order[:n_removed]]
    total = g[:, removed].sum(axis=1)
    for candidate in order[n_removed:]:
        with_candidate = total + g[:, candidate]
        members = [*removed, int(candidate)]
        # Objective after dropping each member: || with_candidate - v_m ||^2, vectorised over members.
        left = with_candidate[:, None] - g[:, members]
        objectives = np.einsum("bm,bm->m", left, left)
        drop = int(np.argmin(objectives))
        removed = [m for i, m in enumerate(members) if i != drop]
        total = with_candidate - g[:, members[drop]]
    return sorted(removed)


def damped_scales(gram: np.ndarray, rhs: np.ndarray, *, limit: float = 10.0) -> np.ndarray | None:
    """Scales ``s`` for the least-squares problem ``gram @ s = rhs`` solved around s = 1, damped.

    With ``delta = s - 1`` and ``r' = rhs - gram @ 1``: minimise ``||gram delta - r'||^2 + ||delta||^2``,
    i.e. ``delta = (gram^2 + I)^-1 gram r'`` (shrinks toward s = 1). Returns None when the solve
    fails or any scale leaves [-limit, limit]: the caller keeps binary masks for that block and tunes
    the next (damping such a block harder into the limit was worse: SmolLM2 at half width, 2,404
    test perplexity against 1,013).

    Shapes: gram (k, k) symmetric, rhs (k,) -> (k,).
    """
    g = np.asarray(gram, dtype=np.float64)
    r = np.asarray(rhs, dtype=np.float64)
    if g.size == 0:
        return np.ones(0)
    residual = r - g @ np.ones(g.shape[0])
    try:
        delta = np.linalg.solve(g @ g + np.eye(g.shape[0]), g @ residual)
    except np.linalg.LinAlgError:
        return None
    scales = 1.0 + delta
    if not np.all(np.isfinite(scales)) or np.any(np.abs(scales) > limit):
        return None
    return scales
