"""Units and their level grids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.models import BertAdapter, GenericAdapter
from planner.models.units import default_ffn_step, neuron_levels, sparsity_grid
from tests.tiny_models import tiny_bert, tiny_net


def test_minilm_sized_ffn_grid_has_24_to_32_levels_ending_at_zero() -> None:
    levels = neuron_levels(1536, default_ffn_step(1536))
    assert 24 <= len(levels) <= 32
    assert levels[0].kept == 1536 and levels[0].structure == "dense"
    assert levels[-1].kept == 0
    assert all(a.kept > b.kept for a, b in itertools.pairwise(levels))  # type: ignore[operator]


def test_finer_ffn_grid() -> None:
    assert len(neuron_levels(1536, 32)) == 49


def test_sparsity_grid_is_geometric_in_density() -> None:
    grid = sparsity_grid(12)
    assert grid[0] == pytest.approx(0.4) and grid[-1] == pytest.approx(0.99)
    density = 1 - np.asarray(grid)
    ratios = density[1:] / density[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-4)


def test_bert_units_per_layer() -> None:
    units = BertAdapter(tiny_bert(classifier=True), name="tiny").units()
    assert [u.name for u in units] == [
        "bert.encoder.layer.0.attention",
        "bert.encoder.layer.0.ffn",
        "bert.encoder.layer.1.attention",
        "bert.encoder.layer.1.ffn",
    ]
    attention = units[0]
    assert [lv.kept for lv in attention.levels] == [4, 3, 2, 1, 0]
    assert attention.compression().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert units[0].signature == units[2].signature != units[1].signature


def test_generic_units_cover_linear_and_conv_levels() -> None:
    model, x = tiny_net()
    units = GenericAdapter(model, (x,), name="net", sparsity_levels=4).units()
    assert [u.name for u in units] == ["conv", "fc1", "fc2"]
    structures = [lv.structure for lv in units[1].levels]
    assert structures == ["dense"] + ["unstructured"] * 4 + ["2:4"] + ["channels"] * 3
    assert [lv.kept for lv in units[1].levels if lv.structure == "channels"] == [48, 32, 16]
    # 2:4 needs rows that are a multiple of 4 (conv: 3*3*3 = 27 weights per output channel).
    assert "2:4" not in [lv.structure for lv in units[0].levels]
