"""LatencyTable: round trips exactly, refuses corrupt or mismatched files with clear messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profilers import SCHEMA_VERSION, LatencyTable, TableFormatError, TableMetadata


def make_table(fingerprint: str = "abc123") -> LatencyTable:
    rows = []
    for unit, costs in (("u0", [10.0, 6.0, 1.0]), ("u1", [20.0, 25.0, 5.0, 2.0])):
        for level, cost in enumerate(costs):
            rows.append(
                {
                    "unit": unit,
                    "kind": "attention",
                    "level": level,
                    "structure": "dense" if level == 0 else "heads",
                    "kept": len(costs) - 1 - level,
                    "sparsity": np.nan,
                    "groups": np.nan,
                    "latency_ms": cost,
                    "raw_ms": cost,
                    "ci_low_ms": cost,
                    "ci_high_ms": cost,
                    "median_ms": cost,
                    "p10_ms": cost * 0.9,
                    "p90_ms": cost * 1.1,
                    "repeats": 5,
                    "noisy_rounds": 0,
                    "impl": "shrunk",
                    "masked_ms": np.nan,
                    "sparse_ms": np.nan,
                    "signature": f"sig-{unit}",
                }
            )
    meta = TableMetadata(
        model_name="tiny",
        model_fingerprint=fingerprint,
        architecture="bert",
        device="cpu",
        device_name="cpu x",
        runtime="torch",
        runtime_version="2.13",
        torch_version="2.13",
        dtype="float32",
        batch_size=2,
        seq_len=8,
        phase="prefill",
        generate_tokens=0,
        threads=1,
        ffn_step=None,
        sparsity_levels=None,
        dense_ms=40.0,
        dense_p10_ms=38.0,
        dense_p90_ms=42.0,
        fixed_ms=10.0,
        calibration_sum_ms=(30.0,),
        calibration_total_ms=(40.0,),
        rounds=5,
        warmup=1,
        smoothing="none",
        created="2026-11-21T00:00:00+00:00",
        planner_version="0.1.0",
    )
    return LatencyTable(frame=pd.DataFrame(rows), meta=meta)


def test_round_trip_is_identical(tmp_path: Path) -> None:
    table = make_table()
    path = table.save(tmp_path / "t.csv")
    loaded = LatencyTable.load(path, expected_fingerprint="abc123")
    assert loaded.meta == table.meta
    pd.testing.assert_frame_equal(loaded.frame, table.frame, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json"]  # no temp files left


def test_prediction_and_max_speedup() -> None:
    table = make_table()
    assert table.units() == ["u0", "u1"]
    assert table.predict_ms([0, 0]) == pytest.approx(40.0)
    assert table.predict_ms({"u1": 3}) == pytest.approx(10 + 10 + 2)
    assert table.max_speedup() == pytest.approx(40.0 / (10 + 1 + 2))
    with pytest.raises(ValueError, match=r"levels 0\.\.2"):
        table.predict_ms([3, 0])
    # With one anchor g is SPDY's model: budget = dense / X - fixed.
    assert table.budget_ms(2.0) == pytest.approx(40.0 / 2 - 10.0)


def _corrupt(tmp_path: Path, how: str) -> Path:
    path = make_table().save(tmp_path / "t.csv")
    meta_path = path.with_suffix(".json")
    if how == "no-sidecar":
        meta_path.unlink()
    elif how == "bad-json":
        meta_path.write_text("{not json")
    elif how == "newer-schema":
        meta = json.loads(meta_path.read_text())
        meta["schema_version"] = 99
        meta_path.write_text(json.dumps(meta))
    elif how == "missing-field":
        meta = json.loads(meta_path.read_text())
        del meta["fixed_ms"]
        meta_path.write_text(json.dumps(meta))
    elif how == "truncated":
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:-2]) + "\n")
    elif how == "nan":
        frame = pd.read_csv(path)
        frame.loc[1, "latency_ms"] = np.nan
        frame.to_csv(path, index=False)
    elif how == "missing-column":
        pd.read_csv(path).drop(columns=["p90_ms"]).to_csv(path, index=False)
    elif how == "garbage":
        path.write_bytes(b"\x00\xff\x00garbage")
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no-sidecar", "does not exist"),
        ("bad-json", "not valid JSON"),
        ("newer-schema", "schema version 99"),
        ("missing-field", "lacks metadata fields"),
        ("truncated", "truncated or mismatched|without gaps"),
        ("nan", "non-finite"),
        ("missing-column", "lacks columns"),
        ("garbage", "not a readable CSV|lacks columns"),
    ],
)
def test_corrupt_tables_are_rejected_with_the_fix(tmp_path: Path, how: str, message: str) -> None:
    path = _corrupt(tmp_path, how)
    with pytest.raises(TableFormatError, match=message) as info:
        LatencyTable.load(path)
    assert "planner profile" in str(info.value)


def test_table_for_another_model_needs_force(tmp_path: Path) -> None:
    path = make_table(fingerprint="other").save(tmp_path / "t.csv")
    with pytest.raises(TableFormatError, match="--force-table"):
        LatencyTable.load(path, expected_fingerprint="mine")
    assert LatencyTable.load(path, expected_fingerprint="mine", force=True).meta.model_fingerprint == "other"


def _spdy_table(fastest: tuple[float, float]) -> LatencyTable:
    """Two units, 40 ms dense each, dense model 100 ms: a fixed part of 20 ms (one anchor, SPDY's model)."""
    import dataclasses

    base = make_table()
    rows = base.frame.iloc[0:0].copy()
    frames = []
    for unit, low in zip(("u0", "u1"), fastest, strict=True):
        part = base.frame[base.frame["unit"] == "u0"].iloc[:2].copy()
        part["unit"] = unit
        part["latency_ms"] = [40.0, low]
        frames.append(part)
    rows = pd.concat(frames, ignore_index=True)
    meta = dataclasses.replace(base.meta, dense_ms=100.0, calibration_sum_ms=(80.0,), calibration_total_ms=(100.0,))
    return LatencyTable(frame=rows, meta=meta)


def test_speedup_budget_counts_unsearched_units_as_fixed() -> None:
    # dense 100 ms, searched units 80 ms dense: a 2x target leaves 50 - 20 = 30 ms for them.
    table = _spdy_table((10.0, 20.0))
    assert table.budget_ms(2.0) == pytest.approx(30.0)
    assert table.max_speedup() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"must be > 1\.0\. Got 0\.5 instead"):
        table.budget_ms(0.5)


def test_unreachable_speedup_names_the_best_reachable() -> None:
    from planner.errors import PlannerError
    from planner.pipeline import check_reachable

    table = _spdy_table((25.0, 25.0))  # fastest: 20 + 50 -> 1.43x
    assert table.max_speedup() == pytest.approx(100 / 70)
    with pytest.raises(PlannerError, match=r"2x is not reachable on this device; the fastest plan gives 1.43x"):
        check_reachable(table, [2.0])
    check_reachable(table, [1.4])


def test_the_advice_for_an_unreachable_speedup_is_reachable() -> None:
    """The advice rounds down: a table reaching 1.796x prints 1.80x, and 1.80x is out of its reach."""
    from planner.errors import PlannerError
    from planner.pipeline import check_reachable

    table = _spdy_table((17.84, 17.84))  # fastest: 20 + 35.68 -> 1.796x
    with pytest.raises(PlannerError, match=r"gives 1\.80x\. Ask for at most 1\.79x\.") as refused:
        check_reachable(table, [1.8])
    advice = float(str(refused.value).rsplit(" ", 1)[1].rstrip("x."))
    check_reachable(table, [advice])


def test_target_below_a_flat_lowest_segment_is_unreachable() -> None:
    """A noisy fastest anchor pooled flat by the isotonic fit makes g's inverse -inf below it: that
    target is unreachable, never "every plan fits" (a 500x plan once passed on a busy CI box)."""
    import dataclasses

    from planner.errors import PlannerError
    from planner.pipeline import check_reachable

    base = _spdy_table((10.0, 20.0))
    meta = dataclasses.replace(base.meta, calibration_sum_ms=(30.0, 80.0), calibration_total_ms=(60.0, 60.0))
    table = LatencyTable(frame=base.frame, meta=meta)
    assert table.budget_ms(500.0) == -float("inf")
    with pytest.raises(PlannerError, match="500x is not reachable"):
        check_reachable(table, [500.0])
    assert table.budget_ms(1.01) == pytest.approx(80.0)  # at or above the top anchor: every plan fits


def _context_table() -> LatencyTable:
    """``make_table`` planning in context: every level costs 1.5x its standalone time, fixed 4 ms."""
    import dataclasses

    base = make_table()
    frame = base.frame.assign(context_ms=base.frame["latency_ms"] * 1.5)
    meta = dataclasses.replace(
        base.meta,
        cost_model="context",
        context_knots=(0.0, 0.5),
        context_ratios=(1.5, 1.5),
        fixed_ms=4.0,
        calibration_sum_ms=(0.0,),
        calibration_total_ms=(4.0,),
    )
    return LatencyTable(frame=frame, meta=meta)


def test_a_context_table_plans_with_its_in_context_costs(tmp_path: Path) -> None:
    table = _context_table()
    assert table.planning_column == "context_ms"
    assert [c.tolist() for c in table.unit_costs()] == [[15.0, 9.0, 1.5], [30.0, 37.5, 7.5, 3.0]]
    assert table.unit_costs("latency_ms")[0].tolist() == [10.0, 6.0, 1.0]
    assert table.predict_ms([0, 3]) == pytest.approx(4.0 + 15.0 + 3.0)
    assert table.budget_ms(2.0) == pytest.approx(40.0 / 2 - 4.0)
    assert "in context" in table.summary()
    loaded = LatencyTable.load(table.save(tmp_path / "t.csv"))
    assert loaded.meta == table.meta
    assert loaded.predict_ms([1, 2]) == pytest.approx(table.predict_ms([1, 2]))


def test_a_context_table_without_its_costs_is_refused(tmp_path: Path) -> None:
    path = _context_table().save(tmp_path / "t.csv")
    frame = pd.read_csv(path)
    frame.loc[2, "context_ms"] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(TableFormatError, match="context_ms") as info:
        LatencyTable.load(path)
    assert "planner profile" in str(info.value)


def test_a_version_4_table_still_plans_through_its_curve(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "t.csv")
    meta = json.loads(path.with_suffix(".json").read_text())
    for key in ("cost_model", "context_knots", "context_ratios", "context_basis"):
        del meta[key]
    meta["schema_version"] = 4
    path.with_suffix(".json").write_text(json.dumps(meta))
    pd.read_csv(path).drop(columns=["context_ms"]).to_csv(path, index=False)
    loaded = LatencyTable.load(path)
    assert loaded.meta.cost_model == "curve"
    assert loaded.predict_ms([0, 0]) == pytest.approx(40.0)


def test_a_version_5_table_multiplied_standalone_times(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "t.csv")
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["context_basis"]
    meta["schema_version"] = 5
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = LatencyTable.load(path)
    assert loaded.meta.context_basis == "standalone" and loaded.meta.schema_version == SCHEMA_VERSION


def test_a_version_6_table_plans_with_the_ratios_it_was_fitted_with(tmp_path: Path) -> None:
    """Version 7 fits ratios that never fall with the removed share; a version-6 table's falling ones stay."""
    base = make_table()
    table = LatencyTable(
        frame=base.frame.assign(context_ms=base.frame["latency_ms"] * [2.0, 1.5, 1.0, 2.0, 2.0, 1.2, 1.0]),
        meta=dataclasses.replace(
            base.meta,
            cost_model="context",
            context_knots=(0.0, 0.5),
            context_ratios=(2.0, 1.0),
            calibration_sum_ms=(0.0,),
            calibration_total_ms=(10.0,),
        ),
    )
    path = table.save(tmp_path / "t.csv")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["schema_version"] = 6
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = LatencyTable.load(path)
    assert loaded.meta.schema_version == SCHEMA_VERSION
    assert loaded.meta.context_ratios == table.meta.context_ratios
    assert loaded.predict_ms([1, 1]) == pytest.approx(table.predict_ms([1, 1]))


def test_an_unknown_context_basis_is_refused(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "t.csv")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["context_basis"] = "wavy"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(TableFormatError, match="context basis 'wavy'") as info:
        LatencyTable.load(path)
    assert "planner profile" in str(info.value)


def test_a_version_7_table_keeps_its_costs_and_a_width_tables_costs_are_checked(tmp_path: Path) -> None:
    """Version 8 prices memory-bound shapes with a width model (its costs in the sidecar); a version-7
    table planned them with ratios over width lines and keeps the costs it was fitted with."""
    table = _context_table()
    path = table.save(tmp_path / "t.csv")
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["context_costs"]
    meta["schema_version"], meta["context_basis"] = 7, "width-line"
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = LatencyTable.load(path)
    assert loaded.meta.context_costs == {} and loaded.meta.context_basis == "width-line"
    assert loaded.predict_ms([1, 2]) == pytest.approx(table.predict_ms([1, 2]))
    widths = dataclasses.replace(
        table.meta, context_basis="width", context_costs={"ffn/present": 0.1, "ffn/kept": 0.01}
    )
    saved = LatencyTable(frame=table.frame, meta=widths).save(tmp_path / "w.csv")
    assert "ffn 0.1 ms/unit + 0.01 ms/kept" in LatencyTable.load(saved).summary()
    meta = json.loads(saved.with_suffix(".json").read_text())
    meta["context_costs"] = {"ffn/present": -1.0}
    saved.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(TableFormatError, match="bad width costs") as info:
        LatencyTable.load(saved)
    assert "planner profile" in str(info.value)


def test_a_version_8_table_was_timed_on_the_heap_as_found_and_an_unknown_heap_is_refused(tmp_path: Path) -> None:
    """Version 9 records the C heap the samples ran on; older tables ran on the heap as found."""
    path = dataclasses.replace(make_table(), meta=dataclasses.replace(make_table().meta, heap="settled")).save(
        tmp_path / "t.csv"
    )
    assert "C heap settled" in LatencyTable.load(path).summary()
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["heap"]
    meta["schema_version"] = 8
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert LatencyTable.load(path).meta.heap == "as found"
    meta["heap"], meta["schema_version"] = "tidy", SCHEMA_VERSION
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(TableFormatError, match="heap 'tidy'") as info:
        LatencyTable.load(path)
    assert "planner profile" in str(info.value)
