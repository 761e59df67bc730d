"""``profile_model`` end to end on tiny models, both runtimes; the ``planner profile`` CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from planner.cli import main
from planner.config import RunConfig
from planner.errors import PlannerError
from planner.models import load_model
from planner.workflows import profile_table
from profilers import LatencyTable

BERT = "tests.tiny_models:tiny_bert_factory"
NET = "tests.tiny_models:tiny_net"
FAST = dict(rounds=2, warmup=1, threads=1)


def profile(out: Path, **settings: object) -> LatencyTable:
    return profile_table(RunConfig(**{**FAST, **settings}), out=out, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_tiny_bert_writes_a_complete_table(tmp_path: Path, runtime: str) -> None:
    out = tmp_path / "table.csv"
    table = profile(out, model=BERT, runtime=runtime, batch_size=2, seq_len=8)
    loaded = load_model(BERT, batch_size=2, seq_len=8)
    units = loaded.adapter.units()
    assert len(table.frame) == sum(len(u.levels) for u in units)
    assert table.units() == [u.name for u in units]
    assert (table.frame["latency_ms"] > 0).all()
    # Layers with one shape share one set of measurements.
    f = table.frame
    layer0 = f[f["unit"] == "encoder.layer.0.attention"]["latency_ms"].to_numpy()
    layer1 = f[f["unit"] == "encoder.layer.1.attention"]["latency_ms"].to_numpy()
    assert (layer0 == layer1).all()
    m = table.meta
    assert (m.runtime, m.batch_size, m.seq_len, m.threads) == (runtime, 2, 8, 1)
    assert m.model_fingerprint == loaded.fingerprint
    assert m.dense_ms > 0 and math.isfinite(m.fixed_ms)
    # 2 x 8 tokens a pass is memory-bound: whole models, some with one kind emptied in alternate layers,
    # pin down a line in width per kind, and the table plans with it.
    assert m.cost_model == "context" and m.context_basis == "width" and not m.context_ratios
    assert {"attention/present", "attention/kept", "ffn/present", "ffn/kept"} <= set(m.context_costs)
    assert {"__emptied_attention__", "__emptied_ffn__", "__emptied_layers__"} <= set(m.anchor_ms)
    assert table.frame["context_ms"].notna().all() and (table.frame["context_ms"] >= 0).all()
    assert table.budget_ms(2.0) == pytest.approx(m.dense_ms / 2 - m.fixed_ms)
    # The fit passes near the measured dense model (noisy anchors on a tiny model: loosely).
    assert abs(table.predict_ms([0] * len(units)) - m.dense_ms) <= 0.5 * m.dense_ms
    assert table.predict_ms([len(u.levels) - 1 for u in units]) <= table.predict_ms([0] * len(units))
    assert table.max_speedup() > 1.0
    reloaded = LatencyTable.load(out, expected_fingerprint=loaded.fingerprint)
    assert reloaded.meta == m
    assert not list(tmp_path.glob("*.partial.json"))  # checkpoint removed after success


def test_generic_model_times_masked_and_sparse_kernels(tmp_path: Path) -> None:
    table = profile(tmp_path / "t.csv", model=NET, sparsity_levels=3)
    f = table.frame
    fc1 = f[(f["unit"] == "fc1") & (f["structure"] == "unstructured")]
    assert len(fc1) == 3
    assert fc1["masked_ms"].notna().all() and fc1["sparse_ms"].notna().all()
    best = fc1[["masked_ms", "sparse_ms"]].min(axis=1).to_numpy()
    dense_ms = float(f[(f["unit"] == "fc1") & (f["level"] == 0)]["latency_ms"].iloc[0])
    # A masked dense kernel is never really faster than dense: its level costs at least dense.
    floor = [max(b, dense_ms) if impl == "masked" else b for b, impl in zip(best, fc1["impl"], strict=True)]
    assert (abs(fc1["latency_ms"].to_numpy() - floor) < 1e-9).all()
    masked = f[(f["impl"] == "masked") & (f["level"] > 0)]
    dense_of = f[f["level"] == 0].set_index("unit")["latency_ms"]
    assert all(row.latency_ms >= dense_of[row.unit] - 1e-12 for row in masked.itertuples())
    assert len(table.meta.calibration_sum_ms) == 1  # generic: no anchors, fixed = dense - sum
    assert table.meta.cost_model == "curve" and table.frame["context_ms"].isna().all()
    assert set(fc1["impl"]) <= {"masked", "csr"}
    conv = f[(f["unit"] == "conv") & (f["structure"] == "unstructured")]
    assert conv["sparse_ms"].isna().all() and set(conv["impl"]) == {"masked"}  # no sparse conv kernel
    assert set(f[f["structure"] == "channels"]["impl"]) == {"shrunk"}


def test_existing_table_is_reused_or_refused(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    first = profile(out, model=BERT, batch_size=2, seq_len=8)
    again = profile(out, model=BERT, batch_size=2, seq_len=8)
    assert again.meta.created == first.meta.created  # reused, not re-measured
    with pytest.raises(PlannerError, match="other settings"):
        profile(out, model=BERT, batch_size=2, seq_len=16)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "The 'model' parameter must be 'minilm' or"),
        (["--model", "tests.tiny_models:missing"], "cannot import the model factory"),
        (["--model", "tests.tiny_models:not_a_factory"], "must return (model, example_inputs)"),
        (
            ["--model", BERT, "--runtime", "ort"],
            "The 'runtime' parameter must be one of torch, onnxruntime, onnxruntime-plain, llama.cpp. Got 'ort'",
        ),
        (["--model", BERT, "--dtype", "nope"], "The 'dtype' parameter must be one of float32, float16, bfloat16."),
        (["--model", BERT, "--device", "cuda"], "cuda"),
        (["--model", BERT, "--runtime", "onnxruntime", "--dtype", "fp16"], "float32 only"),
        (["--model", BERT, "--seq-len", "100"], "seq_len"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["profile", *args, "--batch-size", "2", "--out", str(tmp_path / "t.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_rejects_non_positive_shapes(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--batch-size", value, "--out", str(tmp_path / "t.csv")]) == 2
    assert "The 'batch_size' parameter must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # not a number at all: argparse refuses it
        main(["profile", "--batch-size", "x", "--out", str(tmp_path / "t.csv")])
    assert info.value.code == 2


def test_cli_profile_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv"
    code = main(
        [
            "profile",
            "--model",
            BERT,
            "--batch-size",
            "2",
            "--seq-len",
            "8",
            "--rounds",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "maximum achievable speedup" in text and "fixed part" in text
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_cli_corrupt_existing_table_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv"
    out.write_text("unit,level\nx,0\n")
    out.with_suffix(".json").write_text("{}")
    code = main(["profile", "--model", BERT, "--batch-size", "2", "--seq-len", "8", "--out", str(out), "--no-progress"])
    assert code == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_real_minilm(tmp_path: Path, runtime: str) -> None:
    table = profile(tmp_path / "t.csv", model="minilm", runtime=runtime, batch_size=4, seq_len=32, threads=0)
    assert table.units()[0] == "encoder.layer.0.attention"
    assert len(table.frame) == 6 * (13 + 25)
    assert 1.5 < table.max_speedup() < 200


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_on_cuda(tmp_path: Path, runtime: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dtype = "float16"
    if runtime == "onnxruntime":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            pytest.skip("onnxruntime-gpu is not installed")
    table = profile(
        tmp_path / "t.csv", model=BERT, runtime=runtime, device="cuda", dtype=dtype, batch_size=2, seq_len=8
    )
    assert table.meta.device == "cuda" and (table.frame["latency_ms"] > 0).all()
