"""Pure Fisher kernels: diagonal Fisher, removal errors, rearrangement, damped scales."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.backends.fisher_math import block_objective, damped_scales, diagonal_fisher, rearrange, removal_errors


def test_diagonal_fisher_and_removal_errors() -> None:
    grads = np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]])
    fisher = diagonal_fisher(grads)
    assert fisher.tolist() == [2.0, 9.0, 4.0]
    # keep 3, 2, 1, 0 units: remove nothing, the smallest (2), the two smallest (2 + 4), all.
    assert removal_errors(fisher, [3, 2, 1, 0]).tolist() == [0.0, 1.0, 3.0, 7.5]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8), st.integers(1, 6))
def test_rearrangement_never_increases_the_block_objective(seed: int, units: int, batches: int) -> None:
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(batches, units)) * rng.uniform(0.1, 3.0, size=units)
    for n_removed in range(units + 1):
        removed = rearrange(grads, n_removed)
        assert len(removed) == n_removed == len(set(removed))
        start = np.argsort(diagonal_fisher(grads), kind="stable")[:n_removed]
        assert block_objective(grads, removed) <= block_objective(grads, start) + 1e-9


def test_rearrangement_uses_cancelling_gradients() -> None:
    # Units 0 and 1 are the least important but their gradients add up; unit 2 cancels either one.
    # Removing {0, 1} (diagonal Fisher) costs 8 in the block objective; the swap finds 0.08.
    grads = np.array([[1.0, 1.0, -1.2, 5.0], [1.0, 1.0, -1.2, -3.0]])
    removed = rearrange(grads, 2)
    assert 2 in removed
    best = min(itertools.combinations(range(4), 2), key=lambda s: block_objective(grads, s))
    assert block_objective(grads, removed) == pytest.approx(block_objective(grads, best)) == pytest.approx(0.08)
    assert block_objective(grads, [0, 1]) == pytest.approx(8.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_damped_scales_never_increase_the_least_squares_objective(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(30, k))
    y = rng.normal(size=30) + a @ np.ones(k)
    gram, rhs = a.T @ a, a.T @ y
    scales = damped_scales(gram, rhs, limit=1e9)
    assert scales is not None

    def objective(s: np.ndarray) -> float:
        r = a @ s - y
        return float(r @ r)

    assert objective(scales) <= objective(np.ones(k)) + 1e-9


def test_damped_scales_refuse_wild_solutions() -> None:
    gram = np.array([[1e-3]])
    assert damped_scales(gram, np.array([1e3]), limit=10.0) is not None  # heavily damped: stays near 1
    assert damped_scales(np.array([[1.0]]), np.array([50.0]), limit=10.0) is None
    assert damped_scales(np.zeros((0, 0)), np.zeros(0)).size == 0  # type: ignore[union-attr]
