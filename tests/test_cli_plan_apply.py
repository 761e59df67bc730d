"""`planner profile` -> `planner plan` -> `planner apply` on a tiny Hugging Face folder with a real
tokenizer and a tiny labelled text folder; the saved model reloads and matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from planner.cli import main
from planner.stages.apply.pruned_io import load_pruned


def profile_args(model: str, table: Path, *, rounds: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    """`planner profile` arguments for the tiny workspace model at batch 2, seq 16 (FFN step 8)."""
    return [
        "profile",
        "--model",
        model,
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--rounds",
        str(rounds),
        "--threads",
        "1",
        "--ffn-step",
        "8",
        *extra,
        "--out",
        str(table),
        "--no-progress",
    ]


def plan_args(model: str, table: Path, out: Path, *extra: str) -> list[str]:
    """`planner plan` arguments for ``model`` with ``table``, writing ``out``."""
    return ["plan", "--model", model, "--table", str(table), *extra, "--out", str(out)]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_profile_plan_apply_round_trip(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(workspace / "model")
    table = tmp_path / "table.csv"
    code, _, err = _run(profile_args(model, table, rounds=2), capsys)
    assert code == 0, err
    plan = tmp_path / "plan.json"
    code, _, err = _run(
        plan_args(
            model,
            table,
            plan,
            *("--speedup", "1.1", "--backend", "fisher", "--data", str(workspace / "data"), "--calibration-size", "8"),
        ),
        capsys,
    )
    assert code == 0, err
    data = json.loads(plan.read_text())
    assert data["backend"] == "fisher" and data["predicted_speedup"] >= 1.1 - 1e-9
    assert data["table"]["seq_len"] == 16
    pruned_dir = tmp_path / "pruned"
    code, _, err = _run(
        [
            "apply",
            "--model",
            model,
            "--plan",
            str(plan),
            "--out",
            str(pruned_dir),
            "--data",
            str(workspace / "data"),
            "--calibration-size",
            "8",
            "--onnx",
        ],
        capsys,
    )
    assert code == 0, err
    assert {p.name for p in pruned_dir.iterdir()} == {"model.safetensors", "pruned_config.json", "model.onnx"}
    reloaded = load_pruned(pruned_dir)
    ids = torch.randint(100, 2000, (3, 16))
    logits = reloaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # the model's own head
    assert logits.shape == (3, 2)
    # The ONNX export runs in ONNX Runtime and agrees with PyTorch (dynamic batch size).
    import onnxruntime

    session = onnxruntime.InferenceSession(str(pruned_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, [ids.numpy(), torch.ones_like(ids).numpy()], strict=False))
    torch.testing.assert_close(torch.from_numpy(session.run(None, feeds)[0]), logits.detach(), rtol=1e-4, atol=1e-4)
    # `planner verify` measures the saved model against the dense one on this machine.
    code, out, err = _run(["verify", "--model", model, "--pruned", str(pruned_dir), "--rounds", "2"], capsys)
    assert code == 0, err
    assert "measured speedup" in out and "interleaved rounds" in out
    # Refuses to overwrite, and a plan for another model is refused.
    code, _, err = _run(["apply", "--model", model, "--plan", str(plan), "--out", str(pruned_dir)], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = _run(["apply", "--model", "minilm", "--plan", str(plan), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "not for this model" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speedup", "0.5"], "The 'speedup' parameter must be a number > 1. Got 0.5 instead."),
        (["--speedup", "500"], "is not reachable"),
        (["--speedup", "1.1", "--backend", "obs"], "The 'backend' parameter must be one of fisher, magnitude."),
        (["--speedup", "1.1", "--solver", "annealing"], "The 'solver' parameter must be one of"),
    ],
)
def test_plan_bad_input(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    model = str(workspace / "model")
    table = tmp_path / "table.csv"
    assert main(profile_args(model, table, rounds=1)) == 0
    capsys.readouterr()
    code, _, err = _run(
        plan_args(model, table, tmp_path / "plan.json", "--backend", "magnitude", *extra),
        capsys,
    )
    assert code == 2 and message in err, err
    assert not (tmp_path / "plan.json").exists()


def test_fisher_on_single_class_data_is_refused(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "one" / "only").mkdir(parents=True)
    (tmp_path / "one" / "only" / "a.txt").write_text("text")
    table = tmp_path / "table.csv"
    model = str(workspace / "model")
    assert main(profile_args(model, table, rounds=1)) == 0
    code, _, err = _run(
        plan_args(model, table, tmp_path / "p.json", "--speedup", "1.1", "--data", str(tmp_path / "one")),
        capsys,
    )
    assert code == 2 and "single class" in err
