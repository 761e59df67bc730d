"""The quality half of a promise (``--max-loss`` and the default guard), execution modes, and
corrections that neither chase a busy machine's measurement nor keep a gutted model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from planner.cli import main
from planner.config import RunConfig
from planner.config.quality import GUARD_POINTS, GUARD_RELATIVE, parse_max_loss
from planner.errors import PlannerError
from planner.records.quality import QUALITY_LOST_EXIT, verdict
from planner.records.verification import ModelTiming, Verification
from planner.stages.correct import Applied, correct, launch_bound, obstacle
from planner.workflows import verification_config


# ----- --max-loss --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "metric", "kind", "value"),
    [
        ("1pt", "accuracy", "points", 1.0),
        ("2.5 points", "accuracy", "points", 2.5),
        ("1", "accuracy", "points", 1.0),
        ("20%", "perplexity", "relative", 0.2),
        ("20", "perplexity", "relative", 0.2),
        ("150%", "perplexity", "relative", 1.5),
    ],
)
def test_max_loss_units(text: str, metric: str, kind: str, value: float) -> None:
    limit = parse_max_loss(text, metric)
    assert (limit.kind, limit.value, limit.explicit) == (kind, pytest.approx(value), True)


def test_without_max_loss_the_default_guard_applies() -> None:
    assert parse_max_loss(None, "accuracy").value == GUARD_POINTS
    assert parse_max_loss(None, "perplexity").value == GUARD_RELATIVE
    assert not parse_max_loss(None, "accuracy").explicit


@pytest.mark.parametrize(
    ("text", "metric", "message"),
    [
        ("20%", "accuracy", "does not fit this task"),
        ("1pt", "perplexity", "does not fit this task"),
        ("0", "accuracy", "must be > 0"),
        ("101pt", "accuracy", "<= 100 points"),
        ("-1", "accuracy", "must be a number"),
        ("lots", "perplexity", "must be a number"),
    ],
)
def test_bad_max_loss_names_the_problem_and_the_fix(text: str, metric: str, message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        parse_max_loss(text, metric)


def test_quality_limit_losses() -> None:
    points = parse_max_loss("1pt", "accuracy")
    assert points.loss(0.9685, 0.9662) == pytest.approx(0.23)
    assert points.within(0.9685, 0.9662) and not points.within(0.9685, 0.95)
    relative = parse_max_loss("20%", "perplexity")
    assert relative.loss(40.0, 46.0) == pytest.approx(0.15)
    assert relative.within(40.0, 46.0) and not relative.within(40.0, 50.0)
    assert not relative.within(40.0, float("nan"))


def test_the_run_config_checks_max_loss_against_the_task_before_any_work() -> None:
    assert RunConfig(max_loss="1pt").quality_limit().kind == "points"
    assert RunConfig(model="smollm2", max_loss="30%").quality_limit().value == pytest.approx(0.3)
    with pytest.raises(PlannerError, match="perplexity"):
        RunConfig(model="smollm2", max_loss="1pt")


def test_cli_refuses_a_max_loss_of_the_wrong_kind_with_exit_2(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["run", "--model", str(workspace / "model"), "--data", str(workspace / "data"), "--max-loss", "20%",
                 "--out", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-loss 1pt" in err[0]


def test_verdict_never_calls_a_gutted_model_met() -> None:
    assert verdict(speed_met=True, quality_met=True) == "met"
    assert verdict(speed_met=True, quality_met=False) == "speed met, quality lost"
    assert verdict(speed_met=False, quality_met=False) == "missed, quality lost"
    assert verdict(speed_met=False, quality_met=True) == "missed"


def test_a_launch_bound_table_is_recognised() -> None:
    # Eager on a GPU: every level costs the same until the block is gone.
    flat = [np.array([1.0, 1.0, 0.98, 0.97, 0.1]) for _ in range(6)]
    # Compute-bound: half width costs about half.
    linear = [np.linspace(1.0, 0.05, 9) for _ in range(6)]
    assert launch_bound(flat) and not launch_bound(linear)
    assert "cuda-graphs" in obstacle(launch_bound_table=True, device="cuda", execution="eager")
    assert "larger batch" in obstacle(launch_bound_table=True, device="cpu", execution="eager")
    assert "every faster plan tried" in obstacle(launch_bound_table=False, device="cpu", execution="eager")
    assert "--recover-seconds" in obstacle(launch_bound_table=False, device="cpu", execution="eager", limited=False)


# ----- execution modes ----------------------------------------------------------------------------
def test_execution_auto_is_cuda_graphs_only_for_torch_on_cuda() -> None:
    assert RunConfig().resolved_execution == "eager"
    assert RunConfig().measurement().execution == "eager"
    assert RunConfig(device="cuda").resolved_execution == "cuda-graphs"
    assert RunConfig(device="cuda", runtime="onnxruntime").resolved_execution == "eager"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"execution": "cuda-graphs"}, "needs --device cuda"),
        ({"execution": "cuda-graphs", "device": "cuda", "runtime": "onnxruntime"}, "--runtime torch"),
        ({"execution": "graphs"}, "must be one of auto, eager, cuda-graphs"),
    ],
)
def test_bad_execution_is_refused_before_any_work(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        RunConfig(**overrides)  # type: ignore[arg-type]


def test_cli_refuses_cuda_graphs_on_the_cpu_with_exit_2(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.csv"
    code = main(["profile", "--model", str(workspace / "model"), "--execution", "cuda-graphs", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "--device cuda" in capsys.readouterr().err


def test_runtimes_refuse_modes_they_cannot_time() -> None:
    from profilers import ProfileError, get_runtime

    with pytest.raises(ProfileError, match="needs --device cuda"):
        get_runtime("torch").prepare(torch.nn.Identity(), (torch.ones(1),), device="cpu", dtype="float32",
                                     threads=1, execution="cuda-graphs")  # fmt: skip
    with pytest.raises(ProfileError, match="unknown execution"):
        get_runtime("onnxruntime").prepare(torch.nn.Identity(), (torch.ones(1),), device="cpu", dtype="float32",
                                           threads=1, execution="graphs")  # fmt: skip


def test_a_plan_is_verified_in_the_mode_its_table_was_measured_in() -> None:
    eager_table = {"execution": "eager"}
    graph_table = {"execution": "cuda-graphs"}
    assert verification_config(RunConfig(), eager_table).execution == "eager"
    assert verification_config(RunConfig(), {}).execution == "eager"  # tables before modes were eager
    with pytest.raises(PlannerError, match="--device cuda"):
        verification_config(RunConfig(), graph_table)
    with pytest.raises(PlannerError, match="--allow-mode-mismatch"):
        verification_config(RunConfig(device="cuda", execution="eager"), graph_table)
    allowed = verification_config(RunConfig(device="cuda", execution="eager"), graph_table, allow_mode_mismatch=True)
    assert allowed.execution == "eager"


def test_tables_record_their_execution_mode(tmp_path: Path) -> None:
    from profilers import LatencyTable
    from tests.tiny_models import TINY_ADAPTERS, table_for

    table = table_for(TINY_ADAPTERS["bert"](), "fp")
    graphs = LatencyTable(table.frame, dataclasses.replace(table.meta, execution="cuda-graphs"))
    graphs.save(tmp_path / "t.csv")
    loaded = LatencyTable.load(tmp_path / "t.csv")
    assert loaded.meta.execution == "cuda-graphs" and loaded.meta.provenance()["execution"] == "cuda-graphs"
    assert "(cuda-graphs)" in loaded.summary()


# ----- corrections --------------------------------------------------------------------------------
def _verification(dense_ms: float, pruned_ms: float, *, busy: bool = False, rounds: int = 9) -> Verification:
    spread = np.linspace(-0.03, 0.03, rounds)
    dense = ModelTiming(dense_ms, dense_ms, dense_ms, tuple([dense_ms] * rounds))
    pruned = ModelTiming(pruned_ms, pruned_ms, pruned_ms, tuple(float(pruned_ms * (1 + e)) for e in spread))
    loads = tuple([0.6 if busy else 0.0] * rounds)
    return Verification({"dense": dense, "pruned": pruned}, runtime="torch", device="cpu", loads=loads)


def _applied(predicted: float, measured: float, *, loss: float | None = None, busy: bool = False) -> Applied:
    from tests.tiny_models import plan_of

    plan = plan_of(predicted_speedup=predicted)
    admissible = loss is None or loss <= 1.0
    return Applied(plan, torch.nn.Identity(), _verification(100.0, 100.0 / measured, busy=busy), loss, admissible)


def test_a_speedup_measured_on_a_busy_machine_never_makes_a_heavier_plan() -> None:
    asked: list[float] = []

    def replan(speedup: float) -> Applied:
        asked.append(speedup)
        return _applied(speedup, speedup)

    short_and_busy = _applied(2.0, 1.72, busy=True)
    assert short_and_busy.verification.busy
    final, attempts = correct(short_and_busy, target_speedup=2.0, max_speedup=5.0, corrections=3, replan=replan)
    assert asked == [] and len(attempts) == 1 and final is short_and_busy
    quiet = _applied(2.0, 1.72)
    assert not quiet.verification.busy
    correct(quiet, target_speedup=2.0, max_speedup=5.0, corrections=1, replan=replan)
    assert asked and asked[0] > 2.0  # the same shortfall measured quietly is corrected


def test_a_plan_beyond_max_loss_is_replanned_for_less_speed_and_never_kept() -> None:
    asked: list[float] = []

    def replan(speedup: float) -> Applied:  # losing 1 point per 0.25x above 1.5x
        asked.append(speedup)
        return _applied(speedup, speedup, loss=max(0.0, (speedup - 1.5) * 4))

    final, attempts = correct(_applied(2.0, 2.0, loss=2.0), target_speedup=2.0, max_speedup=5.0, corrections=3,
                              replan=replan)  # fmt: skip
    assert asked and asked[0] < 2.0  # planned for less speed
    assert final.admissible and final.quality_loss is not None and final.quality_loss <= 1.0
    assert all(s < 2.0 for s in asked)  # never heavier than a plan that lost too much
    # Bisection: 2x lost too much -> 1.3x lower (within) -> half-way up (too much) -> half-way down.
    assert asked[0] == pytest.approx(2.0 / 1.3)
    assert asked[1] == pytest.approx((asked[0] + 2.0) / 2)
    assert asked[2] == pytest.approx((asked[0] + asked[1]) / 2)
    within = [a for a in attempts if a.planned_for <= 1.75]
    assert final.plan.predicted_speedup == pytest.approx(max(a.predicted_speedup for a in within))


def test_when_no_plan_is_within_max_loss_the_least_lossy_is_kept() -> None:
    def replan(speedup: float) -> Applied:
        return _applied(speedup, speedup, loss=5.0 + speedup)

    final, attempts = correct(_applied(2.0, 2.0, loss=7.0), target_speedup=2.0, max_speedup=5.0, corrections=2,
                              replan=replan)  # fmt: skip
    assert len(attempts) == 3
    assert final.quality_loss == min(7.0, *(5.0 + a.planned_for for a in attempts[1:]))


def test_run_exits_3_when_the_delivered_model_lost_its_quality(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exit code scripts read: 3 for "quality lost", distinct from bad input (2)."""
    import planner.pipeline
    from planner.records.report import QualitySummary

    captured: dict[str, object] = {}
    real = planner.pipeline.run_pipeline

    def run(config: RunConfig, **kwargs: object):  # type: ignore[no-untyped-def]
        report = real(config, **kwargs)  # type: ignore[arg-type]
        captured["report"] = report
        return dataclasses.replace(
            report, quality=QualitySummary("points", 5.0, 64.6, False, False), verdict="speed met, quality lost"
        )

    monkeypatch.setattr(planner.pipeline, "run_pipeline", run)
    args = ["run", "--model", str(workspace / "model"), "--data", str(workspace / "data"), "--speedup", "1.2",
            "--rounds", "2", "--verify-rounds", "3", "--search-seconds", "0", "--batch-size", "2", "--seq-len", "16",
            "--calibration-size", "8", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(args) == QUALITY_LOST_EXIT
    report = captured["report"]
    quality_met = report.quality.met  # type: ignore[attr-defined]
    assert ("quality lost" not in report.verdict) == quality_met  # type: ignore[attr-defined]
    assert "quality lost" in capsys.readouterr().err


# ----- runtime headroom ---------------------------------------------------------------------------
def test_the_alternative_to_eager_on_cuda_is_cuda_graphs_and_on_cpu_onnx_runtime() -> None:
    from planner.stages.profile.headroom import alternative_of

    cuda = RunConfig(device="cuda").measurement()
    assert cuda.execution == "cuda-graphs"
    assert alternative_of(cuda).execution == "eager"  # type: ignore[union-attr]
    eager = RunConfig(device="cuda", execution="eager").measurement()
    assert alternative_of(eager).execution == "cuda-graphs"  # type: ignore[union-attr]
    cpu = alternative_of(RunConfig().measurement())
    assert cpu is not None and (cpu.runtime, cpu.execution) == ("onnxruntime", "eager")
    assert alternative_of(RunConfig(runtime="onnxruntime").measurement()).runtime == "torch"  # type: ignore[union-attr]


def test_headroom_times_the_dense_model_both_ways_and_says_when_it_alone_meets_the_target() -> None:
    from planner.stages.profile.headroom import Headroom, measure_headroom
    from tests.tiny_models import TINY_ADAPTERS, loaded_of

    adapter = TINY_ADAPTERS["bert"]()
    measurement = RunConfig(batch_size=2, seq_len=8, rounds=2).measurement()
    headroom = measure_headroom(loaded_of(adapter.model, adapter), measurement)
    assert headroom is not None
    assert (headroom.reference, headroom.alternative) == ("torch eager", "onnxruntime eager")
    assert headroom.reference_ms > 0 and headroom.alternative_ms > 0
    assert headroom.speedup == pytest.approx(headroom.reference_ms / headroom.alternative_ms)
    fast = Headroom("torch eager", "torch cuda-graphs", 2.2, 0.69)
    assert "meets the 2x target" in fast.text(2.0) and "meets" not in fast.text(4.0)


def test_run_with_max_loss_keeps_its_plans_within_it_on_held_out_calibration(workspace: Path, tmp_path: Path) -> None:
    """End to end on a tiny model: the limit is recorded, every kept contender and the delivered plan
    are within it on the held-out calibration documents, or the report says none reached the target."""
    from planner.pipeline import run_pipeline
    from tests.test_pipeline import tiny_config

    config = tiny_config(workspace, tmp_path / "cache", max_loss="10pt", corrections=2)
    report = run_pipeline(config, out=tmp_path / "run", progress=False)
    assert report.quality.explicit and report.quality.limit == 10.0 and report.quality.kind == "points"
    assert report.verdict == verdict(speed_met=report.target_met, quality_met=report.quality.met)
    if not report.target_met:
        assert any("no plan within --max-loss" in note for note in report.notes)
    assert "limit 10 points, --max-loss" in (tmp_path / "run" / "report.md").read_text()
