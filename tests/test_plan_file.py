"""The plan file: round trip, JSON Schema, and clear errors for bad plans."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from planner.errors import PlannerError
from planner.records.plan import Plan, UnitChoice, plan_schema


def sample_plan() -> Plan:
    return Plan(
        model_name="tiny",
        model_fingerprint="abc",
        architecture="bert",
        table={
            "device": "cpu",
            "runtime": "torch",
            "dtype": "float32",
            "batch_size": 2,
            "seq_len": 8,
            "dense_ms": 40.0,
        },
        target_speedup=2.0,
        predicted_ms=19.5,
        predicted_speedup=2.05,
        budget_ms=15.0,
        backend="fisher",
        solver="dp",
        seed=0,
        units=(
            UnitChoice(
                "encoder.layer.0.attention",
                "attention",
                2,
                "heads",
                kept=2,
                keep=(0, 3),
                impl="shrunk",
                latency_ms=4.0,
                size=4,
                layer=0,
                modules={"query": "encoder.layer.0.attention.self.query"},
            ),
            UnitChoice(
                "encoder.layer.0.ffn",
                "ffn",
                0,
                "dense",
                kept=48,
                keep=tuple(range(48)),
                impl="dense",
                latency_ms=9.0,
                size=48,
                layer=0,
                modules={"up": "encoder.layer.0.intermediate.dense", "down": "encoder.layer.0.output.dense"},
            ),
        ),
        versions={"planner": "0.1.0"},
    )


def test_round_trip_and_schema(tmp_path: Path) -> None:
    plan = sample_plan()
    path = plan.save(tmp_path / "plan.json")
    assert Plan.load(path) == plan
    jsonschema.validate(json.loads(path.read_text()), plan_schema())
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def _write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = json.loads(sample_plan().to_json())
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=3), "newer than this planner reads"),
        (lambda d: d.update(schema_version=1), "Re-create the plan"),
        (lambda d: d["units"][0].update(modules={"query": 3}), "module paths"),
        (lambda d: d.pop("units"), "lacks fields"),
        (lambda d: d.update(target_speedup="fast"), "'target_speedup' must be"),
        (lambda d: d["units"][0].pop("level"), r"units\[0\] lacks fields"),
        (lambda d: d["units"][0].update(keep=["a"]), "list of integers"),
    ],
)
def test_bad_plans_are_rejected(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlannerError, match=message):
        Plan.load(_write(tmp_path, mutate))


def test_plan_for_another_model_and_missing_or_corrupt_files(tmp_path: Path) -> None:
    path = sample_plan().save(tmp_path / "plan.json")
    with pytest.raises(PlannerError, match="not for this model"):
        Plan.load(path, expected_fingerprint="other")
    with pytest.raises(PlannerError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlannerError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")
