"""The memory-bound cost model: a line in width per kind, fitted to whole models (``profilers.width_model``)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.models.units import Level, Unit
from planner.stages.profile.measure import calibration_anchors
from profilers.width_model import UnitWidths, WidthModel, model_terms

LAYERS = 10
HEADS = ((9, 3), (6, 3), (6, 2), (4, 2), (3, 3), (3, 1), (2, 2), (2, 1), (1, 1), (0, 0))
"""(query heads, key/value groups) per attention level, dense first: SmolLM2's grid."""
NEURONS = tuple(range(1536, -1, -128))
TRUTH = {
    "attention/present": 0.04,
    "attention/kept": 0.027,
    "attention/groups": 0.2,
    "ffn/present": 0.05,
    "ffn/kept": 0.0006,
}
"""ms per present unit, kept head, kept group, kept neuron: about what SmolLM2 decode at KV 512 costs."""
FIXED_MS = 12.0


def model_units() -> list[Unit]:
    out = []
    for layer in range(LAYERS):
        attention = tuple(Level(i, "dense" if i == 0 else "heads", kept=h, groups=g) for i, (h, g) in enumerate(HEADS))
        ffn = tuple(Level(i, "dense" if i == 0 else "neurons", kept=n) for i, n in enumerate(NEURONS))
        out.append(Unit(f"layers.{layer}.self_attn", "attention", attention, "attention", 9, layer=layer, groups=3))
        out.append(Unit(f"layers.{layer}.mlp", "ffn", ffn, "ffn", 1536, layer=layer))
    return out


def widths(units: list[Unit], standalone: dict[str, np.ndarray] | None = None) -> list[UnitWidths]:
    """What the width model reads of each unit; standalone times made up (they must not matter)."""
    out = []
    for u in units:
        kept = np.array([lv.kept for lv in u.levels], dtype=float)
        groups = np.array([np.nan if lv.groups is None else lv.groups for lv in u.levels], dtype=float)
        times = standalone[u.kind] if standalone else np.linspace(1.0, 0.01, len(u.levels))
        out.append(UnitWidths(u.kind, kept, groups, times))
    return out


def measure(units: list[Unit], levels: dict[str, int]) -> float:
    """The 'measured' whole model: the fixed part plus every unit's true cost."""
    truth = WidthModel(FIXED_MS, TRUTH)
    costs = truth.unit_costs(widths(units))
    return FIXED_MS + sum(float(c[levels[u.name]]) for c, u in zip(costs, units, strict=True))


def timed(units: list[Unit], plans: dict[str, dict[str, int]]) -> list[tuple[list[int], float]]:
    return [([levels[u.name] for u in units], measure(units, levels)) for levels in plans.values()]


def attention_emptied_in(units: list[Unit], share: float) -> dict[str, int]:
    """A plan that empties attention in the first ``share`` of layers and keeps the rest dense."""
    cut = round(share * LAYERS)
    return {u.name: len(u.levels) - 1 if u.kind == "attention" and (u.layer or 0) < cut else 0 for u in units}


def test_the_profiles_anchors_recover_every_cost() -> None:
    units = model_units()
    model = WidthModel.fit(widths(units), timed(units, calibration_anchors(units, by_kind=True)))
    assert model is not None
    assert model.fixed_ms == pytest.approx(FIXED_MS, rel=1e-6)
    for key, value in TRUTH.items():
        assert model.costs[key] == pytest.approx(value, rel=1e-6, abs=1e-9)
    plan = attention_emptied_in(units, 0.6)
    costs = model.unit_costs(widths(units))
    predicted = model.fixed_ms + sum(float(c[plan[u.name]]) for c, u in zip(costs, units, strict=True))
    assert predicted == pytest.approx(measure(units, plan), rel=1e-6)


def test_without_anchors_that_empty_one_kind_a_present_unit_is_priced_loosely() -> None:
    """Among the curve's anchors one kind alone is emptied only where a fraction rounds to an empty level
    for one kind and not the other (here attention at 0.95): one whole model pins what a present block
    costs. With the timing noise of a shared machine (2% per whole model, 20 draws) a plan that removes
    attention in 6 of 10 layers is priced about 4x worse than with the anchors that empty one kind in
    alternate layers."""
    units = model_units()
    plan = attention_emptied_in(units, 0.6)
    truth_ms = measure(units, plan)
    errors: dict[bool, list[float]] = {False: [], True: []}
    for by_kind in errors:
        exact = timed(units, calibration_anchors(units, by_kind=by_kind))
        for seed in range(20):
            rng = np.random.default_rng(seed)
            noisy = [(levels, ms * (1.0 + rng.normal(0.0, 0.02))) for levels, ms in exact]
            model = WidthModel.fit(widths(units), noisy)
            assert model is not None
            costs = model.unit_costs(widths(units))
            predicted = model.fixed_ms + sum(float(c[plan[u.name]]) for c, u in zip(costs, units, strict=True))
            errors[by_kind].append(abs(predicted / truth_ms - 1.0))
    assert np.median(errors[True]) < 0.02
    assert np.median(errors[False]) > 2 * np.median(errors[True])


def test_costs_never_fall_as_a_unit_widens_even_from_noisy_anchors() -> None:
    units = model_units()
    rng = np.random.default_rng(3)
    noisy = [(levels, ms * (1.0 + rng.normal(0.0, 0.05))) for levels, ms in timed(units, calibration_anchors(units))]
    noisy += timed(units, calibration_anchors(units, by_kind=True))[-3:]
    model = WidthModel.fit(widths(units), noisy)
    assert model is not None and all(v >= 0 for v in model.costs.values())
    for unit, costs in zip(units, model.unit_costs(widths(units)), strict=True):
        kept = np.array([lv.kept for lv in unit.levels], dtype=float)
        order = np.argsort(kept, kind="stable")
        if unit.kind == "ffn":
            assert np.all(np.diff(costs[order]) >= -1e-12)
        assert costs[-1] == 0.0  # the empty level costs nothing in context


def test_standalone_times_do_not_move_a_width_level_but_price_weight_sparsity() -> None:
    """Timed alone, a kernel step (one MLP width 15% fast, weights in cache) is not a saving in a
    memory-bound model: two tables with and without the step price every width level alike. A 2:4
    level (no width) costs the dense level's cost times its standalone share of dense."""
    step = np.linspace(1.0, 0.0, len(NEURONS))
    stepped = step.copy()
    stepped[2] *= 0.85
    model = WidthModel(FIXED_MS, TRUTH)
    plain = UnitWidths("ffn", np.array(NEURONS, float), np.full(len(NEURONS), np.nan), step)
    with_step = UnitWidths("ffn", np.array(NEURONS, float), np.full(len(NEURONS), np.nan), stepped)
    np.testing.assert_array_equal(model.unit_costs([plain])[0], model.unit_costs([with_step])[0])
    sparse = UnitWidths("ffn", np.array([1536.0, np.nan]), np.full(2, np.nan), np.array([0.8, 0.6]))
    dense_cost, sparse_cost = model.unit_costs([sparse])[0]
    assert dense_cost == pytest.approx(0.05 + 1536 * 0.0006)
    assert sparse_cost == pytest.approx(0.75 * dense_cost)


def test_multi_head_attention_has_no_group_term_and_too_few_anchors_fit_nothing() -> None:
    mha = UnitWidths("attention", np.array([12.0, 6.0, 0.0]), np.full(3, np.nan), np.ones(3))
    mlp = UnitWidths("ffn", np.array([3072.0, 0.0]), np.full(2, np.nan), np.ones(2))
    assert model_terms([mha, mlp]) == [
        ("attention", "present"),
        ("attention", "kept"),
        ("ffn", "present"),
        ("ffn", "kept"),
    ]
    anchors = [([0, 0], 10.0), ([1, 0], 9.0), ([2, 1], 2.0), ([1, 1], 4.0), ([2, 0], 8.0), ([0, 1], 5.0)]
    assert WidthModel.fit([mha, mlp], anchors[:6]) is None  # five unknowns need seven whole models
    assert WidthModel.fit([mha, mlp], [*anchors, ([1, 0], 9.1)]) is not None


@pytest.mark.parametrize(
    ("fixed", "costs", "match"),
    [
        (-1.0, {"ffn/kept": 0.1}, "fixed part"),
        (1.0, {"ffn/kept": -0.1}, "non-negative"),
        (1.0, {"ffn/weight": 0.1}, "kind/term"),
        (1.0, {"ffn": 0.1}, "kind/term"),
    ],
)
def test_a_bad_width_model_is_refused(fixed: float, costs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WidthModel(fixed, costs)


def test_describe_names_each_kinds_costs() -> None:
    text = WidthModel(FIXED_MS, TRUTH).describe()
    assert text.startswith("fixed 12.00 ms;")
    assert "attention 0.04 ms/unit + 0.027 ms/kept + 0.2 ms/group" in text and "ffn 0.05 ms/unit" in text
