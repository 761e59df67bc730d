"""The in-context cost model (standalone x a ratio by removed share), fitted to whole models."""

from __future__ import annotations

import numpy as np
import pytest

from profilers import LatencyTable
from profilers.calibration import CalibrationCurve
from profilers.context import KNOTS, ContextModel, context_basis, hat_weights, removed_share, width_line

LAYERS = 12
ATTENTION = np.array([0.46, 0.39, 0.34, 0.28, 0.22, 0.01])
"""Standalone ms of an attention unit's levels, dense first and empty last."""
MLP = np.linspace(0.59, 0.0, 13)


def truth_ratio(share: np.ndarray) -> np.ndarray:
    """How a unit really costs in the model relative to standalone: thin units cost relatively more."""
    return 1.4 + 0.8 * share + 3.0 * np.clip(share - 0.85, 0.0, None) / 0.15


def measure(levels: list[int], costs: list[np.ndarray], fixed_ms: float = 7.0) -> float:
    """The 'measured' whole model: fixed part plus every unit's true in-context cost."""
    total = fixed_ms
    for c, level in zip(costs, levels, strict=True):
        total += float(c[level] * truth_ratio(removed_share(c)[level : level + 1])[0])
    return total


def units() -> list[np.ndarray]:
    return [ATTENTION, MLP] * LAYERS


def at_fraction(costs: list[np.ndarray], fraction: float) -> list[int]:
    return [round(fraction * (c.size - 1)) for c in costs]


def jitter(rng: np.random.Generator, center: float) -> float:
    return center + float(rng.uniform(-0.3, 0.3))


def anchors(costs: list[np.ndarray]) -> list[tuple[list[int], float]]:
    """The profile's whole models: dense, every unit at a fraction, two mixed ones."""
    rng = np.random.default_rng(0)
    plans = [at_fraction(costs, f) for f in (0.0, 0.25, 0.5, 0.75, 0.85, 0.95, 1.0)]
    for center in (0.3, 0.6):
        plans.append([int(np.clip(round(jitter(rng, center) * (c.size - 1)), 0, c.size - 1)) for c in costs])
    plans.append([round((0.8 if i % 4 < 2 else 0.2) * (c.size - 1)) for i, c in enumerate(costs)])
    return [(p, measure(p, costs)) for p in plans]


def predicted(model: ContextModel, costs: list[np.ndarray], levels: list[int]) -> float:
    in_context = model.unit_costs(costs)
    return model.fixed_ms + float(sum(c[k] for c, k in zip(in_context, levels, strict=True)))


def test_hat_weights_interpolate_and_clamp() -> None:
    weights = hat_weights(np.array([0.0, 0.125, 0.9, 1.0]))
    assert weights.shape == (4, len(KNOTS))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[1, :2], [0.5, 0.5])
    np.testing.assert_allclose(weights[2, 4:], [0.5, 0.5])
    assert weights[3, -1] == 1.0  # beyond the last knot: its ratio


def test_removed_share_is_zero_dense_and_near_one_empty() -> None:
    share = removed_share(ATTENTION)
    assert share[0] == 0.0 and share[-1] > 0.95
    assert np.all(np.diff(share) > 0)


def test_fit_prices_dense_and_skipped_layers_where_the_curve_under_prices_them() -> None:
    """A plan of whole layers kept dense and whole layers removed (depth pruning): the curve through
    evenly thinned anchors maps its summed standalone time to a thinned model's cost and under-prices
    the saving; the context model, fitted to the same anchors, prices it."""
    costs = units()
    timed = anchors(costs)
    model = ContextModel.fit(costs, timed)
    assert model is not None
    curve = CalibrationCurve.fit(
        [float(sum(c[k] for c, k in zip(costs, levels, strict=True))) for levels, _ in timed],
        [total for _, total in timed],
    )
    depth = [c.size - 1 if i // 2 % 2 == 0 else 0 for i, c in enumerate(costs)]  # every other layer skipped
    truth = measure(depth, costs)
    by_curve = curve.total(float(sum(c[k] for c, k in zip(costs, depth, strict=True))))
    assert by_curve / truth - 1 > 0.05
    assert predicted(model, costs, depth) == pytest.approx(truth, rel=0.02)
    for levels, total in timed:
        assert predicted(model, costs, levels) == pytest.approx(total, rel=0.02)


def test_fit_needs_more_anchors_than_unknowns() -> None:
    costs = units()
    assert ContextModel.fit(costs, anchors(costs)[: len(KNOTS) + 2]) is None


def test_model_rejects_negative_ratios_and_bad_knots() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        ContextModel((0.0, 0.5), (1.0, -0.1), 1.0)
    with pytest.raises(ValueError):
        ContextModel((0.5, 0.0), (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="fixed part"):
        ContextModel((0.0, 0.5), (1.0, 1.0), float("nan"))


def test_a_reply_in_context_costs_its_prefill_plus_n_decode_steps() -> None:
    """Where both parts plan in context, a reply's prediction for any plan is the prefill's plus
    ``tokens`` decode steps' (a curve through anchors could only match that on its anchors)."""
    import dataclasses
    import itertools

    from planner.stages.profile.measure import combine_phases
    from tests.test_table import make_table

    def part(phase: str, ratio: float, fixed: float) -> LatencyTable:
        base = make_table()
        return LatencyTable(
            frame=base.frame.assign(context_ms=base.frame["latency_ms"] * ratio),
            meta=dataclasses.replace(
                base.meta,
                phase=phase,
                cost_model="context",
                context_knots=(0.0, 0.5),
                context_ratios=(ratio, ratio),
                fixed_ms=fixed,
                calibration_sum_ms=(0.0,),
                calibration_total_ms=(fixed,),
            ),
        )

    prefill, decode = part("prefill", 1.1, 3.0), part("decode", 1.6, 0.5)
    reply = combine_phases(prefill, decode, tokens=8, units=[])
    assert reply.meta.cost_model == "context" and reply.meta.phase == "generate"
    for levels in itertools.product(range(3), range(4)):
        want = prefill.predict_ms(list(levels)) + 8 * decode.predict_ms(list(levels))
        assert reply.predict_ms(list(levels)) == pytest.approx(want)


def test_knots_no_unit_reaches_take_their_neighbours_ratio() -> None:
    """Two levels per unit (dense and empty): only the first and last knots are used."""
    costs = [np.array([0.5, 0.01]), np.array([0.8, 0.0])] * 6
    model = ContextModel.fit(costs, anchors(costs))
    assert model is not None and len(model.ratios) == len(KNOTS)
    low, high = sorted((model.ratios[0], model.ratios[-1]))
    assert low - 1e-9 <= model.ratios[2] <= high + 1e-9
    dense = [0] * len(costs)
    assert predicted(model, costs, dense) == pytest.approx(measure(dense, costs), rel=0.02)


def test_width_line_straightens_a_step_and_keeps_empty_and_sparsity_levels() -> None:
    widths = np.array([1536.0, 1280.0, 1024.0, 960.0, 768.0, np.nan, 0.0])
    costs = np.array([0.56, 0.47, 0.38, 0.30, 0.29, 0.50, 0.002])  # a kernel step at 960; a sparsity level
    line = width_line(costs, widths)
    assert line[5] == costs[5] and line[6] == costs[6]
    fitted = np.isfinite(widths) & (widths > 0)
    slopes = np.diff(line[fitted]) / np.diff(widths[fitted])
    np.testing.assert_allclose(slopes, slopes[0])
    assert line[3] > costs[3] and line[4] < costs[4]
    np.testing.assert_array_equal(width_line(costs[:2], widths[:2]), costs[:2])  # two points pin nothing


def test_only_memory_bound_shapes_are_priced_by_width() -> None:
    assert context_basis("decode", 1, 512) == "width"
    assert context_basis("decode", 16, 128) == "width"
    assert context_basis("decode", 64, 128) == "standalone"
    assert context_basis("prefill", 8, 128) == "standalone"
    assert context_basis("prefill", 1, 4) == "width"


def test_on_the_width_line_a_step_timed_alone_is_not_taken_for_a_saving() -> None:
    """In a memory-bound model a unit costs in proportion to its bytes; standalone, one MLP width runs 15%
    fast (a kernel step with its weights in cache). A plan with every MLP at that width: the standalone
    basis promises the step's saving, which never comes; the line in width prices the plan."""
    true_costs = units()
    stepped = MLP.copy()
    stepped[2] *= 0.85
    observed = [ATTENTION, stepped] * LAYERS
    widths = [np.full(ATTENTION.size, np.nan), np.linspace(1536.0, 0.0, MLP.size)] * LAYERS  # attention as is
    timed = [(levels, measure(levels, true_costs)) for levels, _ in anchors(true_costs)]
    straight = [width_line(c, w) for c, w in zip(observed, widths, strict=True)]
    on_line, standalone = ContextModel.fit(straight, timed), ContextModel.fit(observed, timed)
    assert on_line is not None and standalone is not None
    plan = [0 if i % 2 == 0 else 2 for i in range(2 * LAYERS)]
    truth = measure(plan, true_costs)
    assert predicted(on_line, straight, plan) == pytest.approx(truth, rel=0.02)
    assert truth / predicted(standalone, observed, plan) - 1 > 0.03


def test_one_slow_anchor_does_not_open_a_dip_for_the_search() -> None:
    """One anchor read slow (the machine's noise): a free fit of seven numbers to ten anchors pays for it
    with a ratio that falls somewhere, and a search puts every unit at the width where it fell. The fit
    keeps the ratio non-decreasing in the removed share, so no width is priced below a thicker one's
    ratio, and a plan of units at any one width stays within the anchors' noise of the truth."""
    costs = units()
    timed = anchors(costs)
    half = at_fraction(costs, 0.5)
    timed = [(levels, total * 1.14 if levels == half else total) for levels, total in timed]
    model = ContextModel.fit(costs, timed)
    assert model is not None
    assert np.all(np.diff(model.ratios) >= -1e-9)
    for fraction in np.linspace(0.0, 1.0, 13):
        plan = at_fraction(costs, float(fraction))
        assert predicted(model, costs, plan) == pytest.approx(measure(plan, costs), rel=0.08)


def test_width_line_never_prices_a_narrow_unit_below_its_share_of_the_bytes() -> None:
    """Convex standalone times (steep near dense, flat near empty, as SmolLM2's MLP at KV 512): a free
    line crosses zero above the narrowest width. With a non-negative intercept and slope every width
    costs at least its share of the dense width's cost."""
    widths = np.arange(1536.0, -1.0, -64.0)
    costs = 0.65 * (widths / 1536.0) ** 1.6
    costs[-1] = 0.002  # the empty level keeps its time
    fitted = widths > 0
    assert np.polyfit(widths[fitted], costs[fitted], 1)[1] < 0  # the free line's intercept
    line = width_line(costs, widths)
    assert np.all(line[fitted] / line[0] >= widths[fitted] / widths[0] - 1e-12)
    assert np.all(line[fitted] > 0) and line[-1] == costs[-1]
