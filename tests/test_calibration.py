"""The calibration curve g (summed unit ms -> end-to-end ms) and its inverse for budgets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profilers.calibration import CalibrationCurve


def test_single_anchor_is_spdys_fixed_plus_sum() -> None:
    curve = CalibrationCurve((30.0,), (40.0,))
    assert curve.fixed_ms == pytest.approx(10.0)
    assert curve.total(5.0) == pytest.approx(15.0)
    assert curve.max_sum(20.0) == pytest.approx(10.0)


def test_interpolates_and_extrapolates_linearly() -> None:
    curve = CalibrationCurve((10.0, 20.0, 40.0), (15.0, 30.0, 50.0))
    assert curve.total(15.0) == pytest.approx(22.5)
    assert curve.total(0.0) == pytest.approx(0.0)  # slope 1.5 below the first anchor
    assert curve.total(50.0) == pytest.approx(60.0)  # slope 1.0 above the last
    assert curve.max_sum(22.5) == pytest.approx(15.0)


def test_fit_sorts_and_makes_totals_non_decreasing() -> None:
    curve = CalibrationCurve.fit([40.0, 10.0, 20.0], [50.0, 16.0, 14.0])
    assert curve.sum_ms == (10.0, 20.0, 40.0)
    assert curve.total_ms == (15.0, 15.0, 50.0)
    assert curve.max_sum(15.0) == pytest.approx(20.0)  # flat segment: its right end


def test_rejects_bad_anchors() -> None:
    with pytest.raises(ValueError):
        CalibrationCurve((10.0, 5.0), (1.0, 2.0))
    with pytest.raises(ValueError):
        CalibrationCurve((), ())


@given(
    st.lists(st.tuples(st.floats(0.1, 1000), st.floats(0.1, 1000)), min_size=1, max_size=6),
    st.floats(0.0, 2000.0),
)
def test_budget_inverse_never_overshoots(points, target) -> None:  # type: ignore[no-untyped-def]
    curve = CalibrationCurve.fit([p[0] for p in points], [p[1] for p in points])
    s = curve.max_sum(target)
    if np.isfinite(s):
        assert curve.total(s) <= target + 1e-6 * max(1.0, target)
