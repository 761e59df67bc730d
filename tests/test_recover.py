"""The recover stage: distillation from the dense model lowers the KL on held-out training examples,
never changes shapes or the caller's model, checkpoints and resumes to the same result, and refuses
what it cannot use."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from planner.errors import PlannerError
from planner.stages.recover import RecoverySettings, distillation_loss, learning_rate, recover
from planner.stages.recover.files import discard_checkpoint
from planner.tasks import CausalLM, Tokenized
from tests.tiny_models import TINY_ADAPTERS


def _lm_setup(windows: int = 40, seq: int = 8) -> tuple[object, torch.nn.Module, CausalLM]:
    """A tiny Llama whose layers matter (random weights at the usual scale barely move the output
    distribution: pruned and dense would differ by a KL of 1e-8), half of every unit pruned."""
    adapter = TINY_ADAPTERS["llama"]()
    with torch.no_grad():
        for name, parameter in adapter.model.named_parameters():
            if "norm" not in name:
                parameter.mul_(50.0 if "embed" in name else 30.0)
    ids, mask = adapter.example_inputs(windows + 8, seq)
    task = CausalLM(
        calibration=Tokenized(ids[:8], mask[:8], None),
        test=Tokenized(ids[:8], mask[:8], None),
        training=Tokenized(ids[8:], mask[8:], None),
        batch_size=4,
        provenance={"task": "causal-lm", "data": "tiny"},
        top_k=8,
    )
    levels = {u.name: len(u.levels) // 2 for u in adapter.units()}
    return adapter, adapter.shrink_to_levels(levels), task


def _settings(**overrides: object) -> RecoverySettings:
    values: dict[str, object] = dict(
        tokens=8 * 4 * 2 * 12, lr=3e-3, warmup_steps=2, batch_size=4, accumulation=2, eval_every=4,
        validation=8, patience=10, checkpoint_every=2, seed=0,
    )  # fmt: skip
    values.update(overrides)
    return RecoverySettings(**values)  # type: ignore[arg-type]


def test_distillation_lowers_the_held_out_kl_and_keeps_shapes_and_the_callers_model() -> None:
    adapter, pruned, task = _lm_setup()
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    recovered, log = recover(adapter, pruned, task, _settings())
    assert log.steps == 12 and log.stopped == "tokens" and log.tokens == 12 * 4 * 2 * 8
    assert log.validation[0].step == 0 and log.validation[-1].step == 12
    assert min(p.kl for p in log.validation[1:]) < 0.8 * log.validation[0].kl
    assert len(log.train_loss) == len(log.lr) == 12 and log.lr[0] < log.lr[2]  # warm-up
    shapes = {k: tuple(v.shape) for k, v in recovered.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in before.items()}  # recovery cannot undo the speed
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # caller's model untouched
    assert log.examples + log.validation_examples == len(task.training)


def test_an_interrupted_recovery_resumes_to_the_same_result(tmp_path: Path) -> None:
    adapter, pruned, task = _lm_setup()
    whole, whole_log = recover(adapter, pruned, task, _settings())
    checkpoint = tmp_path / "recovery.pt"
    _, partial = recover(adapter, pruned, task, _settings(), checkpoint=checkpoint, model_key="m", stop_after_steps=5)
    assert partial.stopped == "interrupted" and partial.steps == 5 and checkpoint.is_file()
    resumed, log = recover(adapter, pruned, task, _settings(), checkpoint=checkpoint, model_key="m")
    assert log.resumed_from in (4, 5) and log.steps == whole_log.steps
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(PlannerError, match="another run"):
        recover(adapter, pruned, task, _settings(), checkpoint=checkpoint, model_key="other model")


def test_best_weights_wait_on_disk_beside_the_checkpoint_and_go_with_it(tmp_path: Path) -> None:
    """The curve's best weights are a file the checkpoint names (not a copy in memory): a later best
    left by a crash between the two writes is dropped on resume, a missing one is refused, and
    ``discard_checkpoint`` removes them all. ``in_place`` trains the caller's model itself."""
    adapter, pruned, task = _lm_setup()
    settings = _settings(eval_every=2)
    whole, _ = recover(adapter, pruned, task, settings)
    checkpoint = tmp_path / "recovery.pt"
    recover(adapter, pruned, task, settings, checkpoint=checkpoint, model_key="m", stop_after_steps=5)
    assert len(list(tmp_path.glob("recovery.pt.best-*.pt"))) == 1  # only the one the checkpoint names
    stray = tmp_path / "recovery.pt.best-99.pt"
    stray.write_bytes(b"a best from after the checkpoint")
    resumed, _ = recover(adapter, pruned, task, settings, checkpoint=checkpoint, model_key="m", in_place=True)
    assert resumed is pruned and not stray.exists()
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    discard_checkpoint(checkpoint)
    assert list(tmp_path.iterdir()) == []
    recover(adapter, whole, task, settings, checkpoint=checkpoint, model_key="m", stop_after_steps=3)
    for path in tmp_path.glob("recovery.pt.best-*.pt"):
        path.unlink()
    with pytest.raises(PlannerError, match="is missing; delete"):
        recover(adapter, whole, task, settings, checkpoint=checkpoint, model_key="m")


def test_recovery_refuses_a_task_without_training_examples_and_a_missing_budget() -> None:
    adapter, pruned, task = _lm_setup()
    empty = CausalLM(calibration=task.calibration, test=task.test, batch_size=4, provenance={}, top_k=8)
    with pytest.raises(PlannerError, match="has 0"):
        recover(adapter, pruned, empty, _settings())
    with pytest.raises(PlannerError, match="needs a budget"):
        RecoverySettings()
    with pytest.raises(PlannerError, match="recover_seconds"):
        RecoverySettings(seconds=0)


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    rates = [learning_rate(s, peak=1.0, warmup=4, total=20) for s in range(20)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))
    assert learning_rate(20, peak=1.0, warmup=4, total=20) == pytest.approx(0.1)
    assert learning_rate(50, peak=1.0, warmup=4, total=None) == 1.0


def test_distillation_loss_is_zero_for_the_teacher_and_positive_otherwise() -> None:
    logits = torch.randn(2, 5, 11)
    assert float(distillation_loss(logits, logits, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits + torch.randn(2, 5, 11), logits, None)) > 0
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    skewed = logits.clone()
    skewed[:, 2:] += 5 * torch.randn(2, 3, 11)
    assert float(distillation_loss(skewed, logits, mask)) == pytest.approx(0.0, abs=1e-6)  # masked positions


def test_run_recovers_between_apply_and_verify_and_reports_the_curve(workspace: Path, tmp_path: Path) -> None:
    import json

    import jsonschema

    from planner.pipeline import run_pipeline
    from planner.records.report import report_schema
    from tests.test_pipeline import tiny_config

    out = tmp_path / "run"
    config = tiny_config(workspace, tmp_path / "cache", recover_tokens=16 * 2 * 4, search_seconds=0.0)
    report = run_pipeline(config, out=out, progress=False)
    assert report.recovery is not None and report.recovery["steps"] >= 1
    assert "recover" in report.stage_seconds and report.recovery["validation"][0]["step"] == 0
    assert 0.0 <= report.recovery["pruned_metric"] <= 1.0  # accuracy before recovery, beside the recovered one
    saved = json.loads((out / "report.json").read_text())
    jsonschema.validate(saved, report_schema())
    assert (out / "recovery.png").is_file() and "Recovery (distillation" in (out / "report.md").read_text()
    assert not list((tmp_path / "cache" / "recovery").glob("*.pt"))  # the checkpoint goes once it is done
    # The saved model is the recovered one, with the plan's shapes (head size 8 in the tiny BERT) ...
    from planner.stages.apply.pruned_io import load_pruned

    shapes = {k: tuple(v.shape) for k, v in load_pruned(out / "pruned").state_dict().items()}

    def rows(suffix: str) -> int:  # 0 when the block was removed (no weight left)
        return next((v[0] for k, v in shapes.items() if k.endswith(suffix)), 0)

    for layer, (heads, neurons) in enumerate(zip(report.heads_kept, report.neurons_kept, strict=True)):
        query = rows(f"layer.{layer}.attention.self.query.weight")
        ffn = rows(f"layer.{layer}.intermediate.dense.weight")
        assert (query, ffn) == (8 * heads, neurons)
    # ... and its speed was measured again after recovery: the report's speedup is not the attempt's.
    kept = next(a for a in report.attempts if a.predicted_speedup == report.predicted_speedup)
    assert report.measured_speedup != kept.measured_speedup


def test_recover_command_writes_a_recovered_model_and_refuses_bad_input(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from planner.cli import main
    from planner.pipeline import run_pipeline
    from planner.stages.apply.pruned_io import load_pruned
    from tests.test_pipeline import tiny_config

    run = tmp_path / "run"
    run_pipeline(tiny_config(workspace, tmp_path / "cache", search_seconds=0.0), out=run, progress=False)
    model, data = str(workspace / "model"), str(workspace / "data")
    out = tmp_path / "recovered"
    base = ["recover", "--model", model, "--data", data, "--pruned", str(run / "pruned"), "--calibration-size", "8",
            "--no-progress"]  # fmt: skip
    assert main([*base, "--recover-tokens", "64", "--out", str(out)]) == 0
    assert (out / "recovery.json").is_file() and not (tmp_path / "recovered.recovery.pt").exists()
    before, after = load_pruned(run / "pruned"), load_pruned(out)
    assert {k: v.shape for k, v in before.state_dict().items()} == {k: v.shape for k, v in after.state_dict().items()}
    capsys.readouterr()
    assert main([*base, "--recover-tokens", "64", "--out", str(out)]) == 2  # exists
    assert main([*base, "--out", str(tmp_path / "x")]) == 2  # no budget
    lm = str(workspace / "lm")
    assert main(["recover", "--model", lm, "--data", str(workspace / "text"), "--pruned", str(run / "pruned"),
                 "--recover-tokens", "64", "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "already exists" in errors[0] and "budget" in errors[1]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_recovery_settings_follow_the_task_unless_given() -> None:
    from planner.config import RECOVER_LR, RunConfig

    assert RunConfig().recovery_settings() is None  # off by default
    assert RunConfig(recover_seconds=10).recovery_settings().lr == RECOVER_LR["accuracy"]
    assert RunConfig(model="smollm2", recover_tokens=1000).recovery_settings().lr == RECOVER_LR["perplexity"]
    assert RunConfig(recover_seconds=10, recover_lr=1e-3).recovery_settings().lr == 1e-3
    with pytest.raises(PlannerError, match="recover_lr"):
        RunConfig(recover_seconds=10, recover_lr=0.0)


def test_sweep_recovers_every_method_alike_and_keeps_each_ones_metric_before(workspace: Path, tmp_path: Path) -> None:
    """`planner sweep --recover-tokens`: every model distilled with the same budget; the metric before
    recovery and its paired difference to uniform's before recovery sit beside the recovered ones."""
    import pandas as pd

    from planner.sweep import run_sweep, sweep_table
    from tests.test_pipeline import tiny_config

    config = tiny_config(workspace, tmp_path / "cache", search_seconds=0.5, recover_tokens=16 * 2 * 4)
    frame = run_sweep(config, [1.1], out=tmp_path / "sweep", methods=["spdy", "uniform"], progress=False)
    assert frame["metric_before_recovery"].between(0, 1).all()
    uniform = frame[(frame["method"] == "uniform (fisher)")]
    assert set(uniform["verdict_before"]) == {"baseline"}
    before = float(uniform["metric_before_recovery"].iloc[0])
    for row in frame[frame["method"] == "planner (spdy)"].itertuples():
        assert row.vs_baseline_before == pytest.approx(row.metric_before_recovery - before)
        assert row.vs_baseline_before_low <= row.vs_baseline_before <= row.vs_baseline_before_high
        assert row.verdict_before in ("win", "tie", "loss")
    saved = pd.read_csv(tmp_path / "sweep" / "pareto.csv", keep_default_na=False)
    assert {"metric_before_recovery", "vs_baseline_before", "verdict_before"} <= set(saved.columns)
    assert "before recovery" in sweep_table(frame)


def test_lora_recovery_trains_adapters_only_and_merges_them_back() -> None:
    """``lora_rank``: only adapters train (the KL still falls), then they are folded into the weights:
    the recovered model has the pruned model's modules, parameter names and shapes."""
    from planner.stages.recover.lora import lora_targets

    adapter, pruned, task = _lm_setup()
    assert lora_targets(pruned) and not any("lm_head" in name for name in lora_targets(pruned))
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    recovered, log = recover(adapter, pruned, task, _settings(lora_rank=4, lr=3e-2))
    assert min(p.kl for p in log.validation[1:]) < 0.9 * log.validation[0].kl
    assert log.settings["lora_rank"] == 4
    assert {k: tuple(v.shape) for k, v in recovered.state_dict().items()} == {
        k: tuple(v.shape) for k, v in before.items()
    }
    assert {type(m) for m in recovered.modules()} == {type(m) for m in pruned.modules()}  # no adapter left
    assert all(p.requires_grad for p in recovered.parameters())
    changed = [k for k, v in recovered.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # merged into the adapted layers only
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # caller's model untouched
    with pytest.raises(PlannerError, match="recover_lora"):
        _settings(lora_rank=-1)


def test_lora_settings_come_from_the_run_config() -> None:
    from planner.config import RECOVER_LORA_LR, RunConfig

    settings = RunConfig(model="smollm2", recover_seconds=10, recover_lora=8).recovery_settings()
    assert settings.lora_rank == 8 and settings.lr == RECOVER_LORA_LR["perplexity"]
    with pytest.raises(PlannerError, match="recover_lora"):
        RunConfig(recover_seconds=10, recover_lora=-2)


def test_lora_without_peft_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # as if it were not installed
    adapter, pruned, task = _lm_setup()
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    with pytest.raises(PlannerError, match=r"latency-planner\[lora\]"):
        recover(adapter, pruned, task, _settings(lora_rank=4), in_place=True)
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # nothing touched
