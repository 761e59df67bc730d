"""GGUF export (llama.cpp's ``deci`` architecture, per-layer shapes) and the llama.cpp check.

A tiny random Llama with the real SmolLM2 byte-level BPE tokenizer is pruned unevenly (every way a
block can be cut), written, read back with the ``gguf`` reader and run in llama.cpp, whose logits
and perplexity must match the pruned torch model's. The slow test does the same on the real SmolLM2
in f16 and q8_0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from planner.cli import main
from planner.errors import PlannerError
from planner.models.gguf_writer import SHIFT_BLOCK, gguf_blocks, refusal, write_gguf
from planner.models.loading import shape_path
from planner.records.gguf import PERPLEXITY_TOLERANCE
from planner.stages.apply.gguf_check import check_gguf, export_checked_gguf


@pytest.fixture(scope="module")
def bpe_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random Llama (hidden 64, 4 query heads in 2 KV groups of size 16, FFN 64, untied head)
    saved with SmolLM2's tokenizer."""
    import shutil

    import transformers

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bpe") / "lm"
    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # logits with a spread, so top-1 agreement means something
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.mul_(4.0)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shape_path("smollm2") / name, folder / name)
    return folder


def _adapter(folder: Path) -> Any:
    from planner.models import load_model

    return load_model(str(folder)).adapter


def _uneven(adapter: Any) -> Any:
    """Layer 0: no heads (FFN kept); layer 1: one KV group, FFN removed; layer 2: nothing left (the
    identity); layer 3: 2 of 4 heads in 2 groups, 24 of 64 neurons."""
    keep: dict[str, list[int]] = {}
    plan = [([], list(range(0, 64, 2))), ([0, 1], []), ([], []), ([0, 2], list(range(24)))]
    for layer, (heads, neurons) in enumerate(plan):
        attention, ffn = adapter.unit_names(layer)
        keep[attention], keep[ffn] = heads, neurons
    return adapter.shrink(keep).eval()


def _windows(n: int = 3, seq: int = 24) -> torch.Tensor:
    return torch.randint(3, 49152, (n, seq), generator=torch.Generator().manual_seed(1))


def test_blocks_express_every_way_a_layer_can_be_cut(bpe_lm: Path) -> None:
    blocks = gguf_blocks(_uneven(_adapter(bpe_lm)))
    assert [b.layer for b in blocks] == [0, 1, 3]  # the identity layer is left out
    first, second, last = blocks
    assert (first.heads, first.kv_heads, first.ffn) == (1, 1, 32) and "zero output" in first.note
    assert (second.heads, second.kv_heads, second.ffn) == (2, 1, 1) and "zero FFN" in second.note
    assert (last.heads, last.kv_heads, last.ffn, last.note) == (2, 2, 24, "")


def test_the_file_holds_per_layer_shapes_the_tokenizer_and_rotary_rows(bpe_lm: Path, tmp_path: Path) -> None:
    import gguf

    model = _uneven(_adapter(bpe_lm))
    path = tmp_path / "m.gguf"
    write_gguf(model, path, weight_type="f32", tokenizer_folder=bpe_lm)
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == "deci" and fields["deci.block_count"] == 3
    assert fields["deci.attention.head_count"] == [1, 2, 2]
    assert fields["deci.attention.head_count_kv"] == [1, 1, 2]
    assert fields["deci.feed_forward_length"] == [32, 1, 24]
    assert reader.fields["tokenizer.ggml.tokens"].contents()[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(reader.fields["tokenizer.ggml.merges"].contents()) > 40000
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" in tensors  # untied head written
    assert "blk.2.ffn_down.weight" in tensors and tuple(tensors["blk.2.ffn_down.weight"].shape) == (24, 64)
    # Rotary rows: head 0 of layer 3's query, GGUF row 2i+j is Hugging Face row j*8+i.
    q = model.model.layers[3].self_attn.q_proj.weight.detach().numpy()
    written = np.asarray(tensors["blk.2.attn_q.weight"].data).reshape(q.shape)
    assert np.array_equal(written[1], q[8]) and np.array_equal(written[2], q[1]) and np.array_equal(written[0], q[0])


def test_q8_0_quantizes_rows_of_32_and_keeps_others_in_f16(bpe_lm: Path, tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "q.gguf"
    write_gguf(_uneven(_adapter(bpe_lm)), path, weight_type="q8_0", tokenizer_folder=bpe_lm)
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    assert kinds["blk.2.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 64
    assert kinds["blk.2.ffn_down.weight"] == gguf.GGMLQuantizationType.F16  # rows of 24 neurons
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_llama_cpp_computes_what_the_pruned_torch_model_computes(bpe_lm: Path, tmp_path: Path) -> None:
    model = _uneven(_adapter(bpe_lm))
    path = tmp_path / "m.gguf"
    blocks = write_gguf(model, path, weight_type="f32", tokenizer_folder=bpe_lm)
    check = check_gguf(path, model, _windows(), weight_type="f32", blocks=blocks, threads=1)
    assert check.passed, check.text()
    assert check.max_abs_logit_diff <= 1e-3 * check.max_abs_logit + 1e-3
    assert abs(check.perplexity_ratio - 1) <= PERPLEXITY_TOLERANCE["f32"] and check.top1_agreement >= 0.99
    assert len(check.notes) == 2


def _biased(folder: Path, plan: list[tuple[list[int], list[int]]]) -> Any:
    """The tiny Llama cut by ``plan`` ((heads, neurons) kept per layer) after every output projection gained
    a random bias (as compensation or a fitted intercept leaves them; emptied blocks keep theirs)."""
    adapter = _adapter(folder)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in adapter.model.model.layers:
            for module in (layer.self_attn.o_proj, layer.mlp.down_proj):
                module.bias = torch.nn.Parameter(torch.randn(64, generator=generator))
    keep: dict[str, list[int]] = {}
    for layer, (heads, neurons) in enumerate(plan):
        attention, ffn = adapter.unit_names(layer)
        keep[attention], keep[ffn] = heads, neurons
    return adapter.shrink(keep).eval()


BIASED_PLANS = {
    # layer 0 attention-free (its bias on the first block's zero head), layer 1 FFN-free (bias on the zero
    # FFN), layer 2 removed (both biases join block 1's FFN output), layer 3 whole
    "emptied and removed blocks": [([], list(range(0, 64, 2))), ([0, 1], []), ([], []), ([0, 2], list(range(24)))],
    # layer 0 removed before a block with heads (a shift block first), layer 2 attention-free mid-model
    "a removed first layer": [([], []), ([0, 1, 2, 3], list(range(40))), ([], list(range(16))), ([0, 1], [])],
}


@pytest.mark.parametrize("cut", list(BIASED_PLANS))
def test_llama_cpp_adds_the_biases_pruning_left_where_torch_does(
    bpe_lm: Path, tmp_path: Path, cut: str, monkeypatch: Any
) -> None:
    import gguf

    from planner.models import gguf_writer

    model = _biased(bpe_lm, BIASED_PLANS[cut])
    path = tmp_path / "b.gguf"
    blocks = write_gguf(model, path, weight_type="f32", tokenizer_folder=bpe_lm)
    check = check_gguf(path, model, _windows(), weight_type="f32", blocks=blocks, threads=1)
    assert check.passed, check.text()
    assert check.max_abs_logit_diff <= 1e-3 * check.max_abs_logit + 1e-3
    names = {t.name for t in gguf.GGUFReader(str(path)).tensors}
    if cut == "a removed first layer":
        assert blocks[0] is SHIFT_BLOCK and [b.layer for b in blocks] == [-1, 1, 2, 3]
        assert "blk.0.ffn_down.bias" in names and "blk.0.attn_output.bias" not in names
        assert "blk.2.attn_output.bias" not in names  # layer 2's emptied attention: on block 1's FFN output
    else:
        assert [b.layer for b in blocks] == [0, 1, 3] and "blk.0.attn_output.bias" in names
    # Without the biases llama.cpp computes another model: the check sees it.
    stripped = tmp_path / "stripped.gguf"
    monkeypatch.setattr(gguf_writer, "stream_biases", lambda model, blocks: {})
    write_gguf(model, stripped, weight_type="f32", tokenizer_folder=bpe_lm)
    assert not check_gguf(stripped, model, _windows(), weight_type="f32", blocks=blocks, threads=1).passed


def test_a_wrong_rotary_layout_is_caught_by_the_check(bpe_lm: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """The check fails when the file computes something else (here: Q and K rows left unpermuted)."""
    from planner.models import gguf_writer as gguf_export

    model = _uneven(_adapter(bpe_lm))
    monkeypatch.setattr(gguf_export, "_rotary_rows", lambda weight, heads: weight)
    path = tmp_path / "bad.gguf"
    blocks = write_gguf(model, path, weight_type="f32", tokenizer_folder=bpe_lm)
    check = check_gguf(path, model, _windows(), weight_type="f32", blocks=blocks, threads=1)
    assert not check.passed and any("logit" in f for f in check.failures())
    with pytest.raises(PlannerError, match="was not kept"):
        export_checked_gguf(
            model, tmp_path, weight_type="f32", spec=str(bpe_lm), tokenizer_folder=bpe_lm, windows=_windows()
        )
    assert not (tmp_path / "model.gguf").exists() and not (tmp_path / "gguf_check.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.gguf"]


def test_models_the_writer_cannot_express_are_refused(workspace: Path) -> None:
    from tests.tiny_models import tiny_decoder

    assert "gpt2" in str(refusal(tiny_decoder("gpt2"), source_gguf=None, tokenizer_folder=None))
    assert "'qwen3'" in str(refusal(tiny_decoder("qwen3"), source_gguf=None, tokenizer_folder=None))
    biased = tiny_decoder("llama")
    biased.config.attention_bias = True
    assert "biases" in str(refusal(biased, source_gguf=None, tokenizer_folder=None))
    wordpiece = refusal(_adapter(workspace / "lm").model, source_gguf=None, tokenizer_folder=workspace / "lm")
    assert wordpiece is not None and "WordPiece" in wordpiece


def test_apply_gguf_refuses_a_wordpiece_model_before_any_work(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli_plan_apply import plan_args, profile_args

    lm = str(workspace / "lm")
    table, plan = tmp_path / "t.csv", tmp_path / "p.json"
    assert main(profile_args(lm, table)) == 0
    assert main(plan_args(lm, table, plan, "--backend", "magnitude", "--speedup", "1.1")) == 0
    capsys.readouterr()
    out = tmp_path / "pruned"
    code = main(
        ["apply", "--model", lm, "--plan", str(plan), "--out", str(out), "--gguf", "--data", str(workspace / "text")]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "WordPiece" in err
    assert not out.exists()


def test_apply_gguf_writes_a_checked_file(bpe_lm: Path, workspace: Path, tmp_path: Path) -> None:
    import json

    from tests.test_cli_plan_apply import plan_args, profile_args

    lm = str(bpe_lm)
    table, plan = tmp_path / "t.csv", tmp_path / "p.json"
    assert main(profile_args(lm, table)) == 0
    # 1.1x: the tiny model's fixed part leaves a reach of 1.2-1.4x, measured anew each run
    assert main(plan_args(lm, table, plan, "--backend", "magnitude", "--speedup", "1.1")) == 0
    out = tmp_path / "pruned"
    data = str(workspace / "text")
    assert main(["apply", "--model", lm, "--plan", str(plan), "--out", str(out), "--gguf", "f32", "--data", data]) == 0
    check = json.loads((out / "gguf_check.json").read_text())
    assert check["passed"] and check["weight_type"] == "f32" and check["windows"] >= 1
    assert abs(check["perplexity_llamacpp"] / check["perplexity_torch"] - 1) <= PERPLEXITY_TOLERANCE["f32"]
    assert (out / "model.gguf").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("weight_type", ["f16", "q8_0"])
def test_pruned_smollm2_runs_in_llama_cpp(weight_type: str, tmp_path: Path) -> None:
    """The real SmolLM2 (its own GGUF tokenizer) cut unevenly, on held-out text windows."""
    from planner.models import load_model
    from planner.stages.apply.gguf_check import held_out_windows
    from planner.tasks import build_task

    loaded = load_model("smollm2")
    adapter = loaded.adapter
    keep: dict[str, list[int]] = {}
    for layer in range(30):  # a plan a search could make: layer 20 gone, 27 without attention, 28 without FFN
        attention, ffn = adapter.unit_names(layer)
        keep[attention] = [] if layer in (20, 27) else list(range(6 if layer % 4 == 1 else 9))
        keep[ffn] = [] if layer in (20, 28) else list(range(1400 if layer % 6 == 3 else 1536))
    model = adapter.shrink(keep).eval()
    task = build_task(
        loaded, task="causal-lm", data="bbc", seq_len=64, calibration_size=4, batch_size=4, seed=0, cache_dir=tmp_path
    )
    check = export_checked_gguf(
        model, tmp_path, weight_type=weight_type, spec="smollm2", tokenizer_folder=None, windows=held_out_windows(task)
    )
    assert check.passed and check.blocks == 29 and (tmp_path / "model.gguf").is_file()
    assert check.perplexity_torch < 1000  # a usable model: a gutted one hides quantization noise in the check


@pytest.mark.slow
def test_a_compensated_smollm2_runs_in_llama_cpp_with_its_biases(tmp_path: Path) -> None:
    """FLAP's compensation on the real SmolLM2, cut so every place a bias can land is used: layer 20
    removed (its biases join block 19's FFN output), 27 attention-free (its bias joins 26's), 28 FFN-free."""
    from planner.backends.compensation import compensated_shrink
    from planner.models import load_model
    from planner.stages.apply.gguf_check import held_out_windows
    from planner.tasks import build_task

    loaded = load_model("smollm2")
    adapter = loaded.adapter
    task = build_task(
        loaded, task="causal-lm", data="bbc", seq_len=64, calibration_size=4, batch_size=4, seed=0, cache_dir=tmp_path
    )
    keep: dict[str, list[int]] = {}
    for layer in range(30):
        attention, ffn = adapter.unit_names(layer)
        keep[attention] = [] if layer in (20, 27) else list(range(6 if layer % 4 == 1 else 9))
        keep[ffn] = [] if layer in (20, 28) else list(range(1024 if layer % 6 == 3 else 1536))
    model = compensated_shrink(adapter, keep, task).eval()
    assert model.model.layers[20].self_attn.bias is not None  # a removed layer that still adds a constant
    check = export_checked_gguf(
        model, tmp_path, weight_type="f16", spec="smollm2", tokenizer_folder=None, windows=held_out_windows(task)
    )
    assert check.passed and check.blocks == 29, check.text()


def test_run_gguf_refuses_an_encoder_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["run", "--model", "minilm", "--gguf", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'bert'" in err
    assert not out.exists()


def test_run_gguf_ships_the_pruned_decoder_for_llama_cpp(bpe_lm: Path, workspace: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    args = ["run", "--model", str(bpe_lm), "--data", str(workspace / "text"), "--speedup", "1.05", "--batch-size", "2"]
    args += ["--seq-len", "16", "--threads", "1", "--rounds", "2", "--verify-rounds", "3", "--search-seconds", "1"]
    args += ["--calibration-size", "8", "--search-examples", "4"]
    code = main([*args, "--gguf", "q8_0", "--out", str(out), "--no-progress"])
    assert code in (0, 3)  # a quality ending still ships the model it delivered
    check = json.loads((out / "pruned" / "gguf_check.json").read_text())
    assert check["passed"] and check["weight_type"] == "q8_0" and (out / "pruned" / "model.gguf").is_file()


# ----- --runtime llama.cpp ---------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_llama_cpp_tables_time_every_unit_and_whole_models(bpe_lm: Path, tmp_path: Path, phase: str) -> None:
    from profilers import LatencyTable

    table_path = tmp_path / "t.csv"
    args = ["profile", "--model", str(bpe_lm), "--runtime", "llama.cpp", "--batch-size", "1", "--seq-len", "16"]
    args += ["--phase", phase, "--threads", "1", "--rounds", "2", "--ffn-step", "32", "--out", str(table_path)]
    assert main([*args, "--no-progress"]) == 0
    table = LatencyTable.load(table_path)
    assert table.meta.runtime == "llama.cpp" and table.meta.phase == phase
    assert table.meta.runtime_version.startswith("llama-cpp-python")
    frame = table.frame
    assert set(frame["kind"]) == {"attention", "ffn"} and len(set(frame["unit"])) == 8
    removed = frame[frame["kept"] == 0]
    dense = frame[frame["level"] == 0]
    assert len(removed) == 8 and removed["latency_ms"].sum() < dense["latency_ms"].sum()
    assert table.meta.dense_ms > 0 and all(v > 0 for v in table.meta.anchor_ms.values())


def test_llama_cpp_reply_tables_combine_the_prefill_and_decode_tables(bpe_lm: Path, tmp_path: Path) -> None:
    from profilers import LatencyTable

    table_path = tmp_path / "t.csv"
    args = ["profile", "--model", str(bpe_lm), "--runtime", "llama.cpp", "--batch-size", "1", "--seq-len", "16"]
    args += ["--generate", "3", "--threads", "1", "--rounds", "2", "--ffn-step", "32", "--out", str(table_path)]
    assert main([*args, "--no-progress"]) == 0
    table = LatencyTable.load(table_path)
    parts = {phase: LatencyTable.load(tmp_path / f"t-{phase}.csv") for phase in ("prefill", "decode")}
    assert table.meta.phase == "generate" and table.meta.generate_tokens == 3
    assert {part.meta.runtime for part in parts.values()} == {"llama.cpp"}
    expected = parts["prefill"].meta.dense_ms + 3 * parts["decode"].meta.dense_ms
    assert table.meta.dense_ms == pytest.approx(expected, rel=1e-9)


def test_a_llama_cpp_reply_is_the_greedy_reply_torch_generates(bpe_lm: Path, tmp_path: Path) -> None:
    """The reply ``--generate`` times in llama.cpp (verification, anchors) is the greedy reply: every
    token it picks is the pruned torch model's top choice after the same tokens (up to float ties), and
    it is converted and timed as one call."""
    from planner.models.phases import GenerateLoop
    from profilers.runtimes.llamacpp import LlamaCppModel, LlamaCppRuntime

    model = _uneven(_adapter(bpe_lm))
    prompt = _windows(1, 12)
    path = tmp_path / "m.gguf"
    write_gguf(model, path, weight_type="f32", timing_only=True)
    llama = LlamaCppModel(path, n_ctx=32, threads=1, exact=True, logits_all=False)
    try:
        reply = llama.reply(prompt[0].tolist(), 5)
    finally:
        llama.close()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt[0].tolist() + reply])).logits[0, prompt.shape[1] - 1 : -1]
    chosen = logits[torch.arange(5), torch.tensor(reply)]
    best = logits.max(dim=-1).values
    assert len(reply) == 5 and bool((chosen >= best - 1e-3 * best.abs() - 1e-3).all()), (chosen, best)
    runner = LlamaCppRuntime().prepare(
        GenerateLoop(model, tokens=5), (prompt, torch.ones_like(prompt)), device="cpu", dtype="float32", threads=1
    )
    assert runner() > 0


def test_unit_models_keep_the_unit_off_the_last_block(bpe_lm: Path, tmp_path: Path) -> None:
    """llama.cpp runs the last block's FFN on the output rows only: a unit there would be timed for one
    token of a prefill."""
    from planner.models.gguf_writer import FIXED_BLOCK, GraphShape, write_unit_gguf

    model = _adapter(bpe_lm).model
    layer = model.model.layers[0]
    shape = GraphShape.of(model.config)
    mlp_blocks = write_unit_gguf(tmp_path / "mlp.gguf", shape, mlp=layer.mlp)
    attention_blocks = write_unit_gguf(tmp_path / "att.gguf", shape, attention=layer.self_attn)
    for blocks in (mlp_blocks, attention_blocks):
        assert blocks[0] is FIXED_BLOCK and blocks[-1] is FIXED_BLOCK and len(blocks) == 3
    assert (mlp_blocks[1].heads, mlp_blocks[1].ffn) == (0, 64) and attention_blocks[1].heads == 4
    assert write_unit_gguf(tmp_path / "empty.gguf", shape) == [FIXED_BLOCK, FIXED_BLOCK]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--model", "minilm"], "is an encoder"),
        (["--batch-size", "2"], "one sequence"),
    ],
)
def test_llama_cpp_runtime_refuses_what_it_cannot_time(
    bpe_lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    args = ["profile", "--model", str(bpe_lm), "--runtime", "llama.cpp", "--batch-size", "1", "--seq-len", "16"]
    code = main([*args, *extra, "--out", str(tmp_path / "t.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err
    assert not (tmp_path / "t.csv").exists()


def test_the_headroom_of_a_cpu_decoder_at_batch_1_is_llama_cpp(bpe_lm: Path, workspace: Path) -> None:
    from planner.config import RunConfig
    from planner.models import load_model
    from planner.stages.profile.headroom import alternative_of

    one = RunConfig(model=str(bpe_lm), batch_size=1, seq_len=16).measurement()
    assert alternative_of(one, load_model(str(bpe_lm))).runtime == "llama.cpp"  # type: ignore[union-attr]
    eight = RunConfig(model=str(bpe_lm), batch_size=8, seq_len=16).measurement()
    assert alternative_of(eight, load_model(str(bpe_lm))).runtime == "onnxruntime"  # type: ignore[union-attr]
    encoder = RunConfig(model=str(workspace / "model"), batch_size=1, seq_len=16).measurement()
    assert alternative_of(encoder, load_model(str(workspace / "model"))).runtime == "onnxruntime"  # type: ignore[union-attr]
