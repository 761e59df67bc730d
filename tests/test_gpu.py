"""CUDA paths (skipped without a GPU): semi-structured 2:4 kernels, planning from a GPU table, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from planner.cli import main
from planner.models import GenericAdapter
from planner.models.phases import Shape
from profilers.sparse_kernels import SemiStructuredLinear, semi_structured_supported, two_four_mask
from tests.test_cli_plan_apply import profile_args

pytestmark = pytest.mark.gpu


def test_semi_structured_linear_matches_the_masked_dense_layer() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(128, 64).cuda().half()
    assert semi_structured_supported((64, 128), torch.float16, "cuda")
    sparse = SemiStructuredLinear(layer.weight, layer.bias)
    x = torch.randn(256, 128, device="cuda", dtype=torch.float16)
    masked = layer.weight * two_four_mask(layer.weight)
    expected = torch.nn.functional.linear(x, masked, layer.bias)
    torch.testing.assert_close(sparse(x), expected, rtol=2e-2, atol=2e-2)


def test_generic_2_4_levels_time_the_semi_structured_kernel_on_cuda() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    x = torch.randn(64, 128)
    adapter = GenericAdapter(net, (x,), name="mlp", sparsity_levels=2)
    shape = Shape(batch_size=64, seq_len=1, phase="prefill")
    work = adapter.workloads(adapter.units(), shape, runtime="torch", device="cuda", dtype=torch.float16)
    impls = {(w.signature.split(":")[1], w.impl) for w in work}
    assert ("128x64", "semi_structured") in impls


def test_plan_from_a_gpu_table_applies_on_the_gpu(workspace: Path, tmp_path: Path) -> None:
    model = str(workspace / "model")
    table = tmp_path / "gpu.csv"
    assert main(profile_args(model, table, rounds=3, extra=("--device", "cuda", "--dtype", "float16"))) == 0
    from profilers import LatencyTable

    best = LatencyTable.load(table).max_speedup()
    if best < 1.05:
        pytest.skip(f"a tiny model on this GPU is launch-bound: at most {best:.2f}x is reachable")
    target = f"{1 + (best - 1) / 2:.3f}"
    plan = tmp_path / "plan.json"
    assert (
        main(
            [
                "plan",
                "--model",
                model,
                "--table",
                str(table),
                "--speedup",
                target,
                "--backend",
                "magnitude",
                "--out",
                str(plan),
            ]
        )
        == 0
    )
    assert main(["apply", "--model", model, "--plan", str(plan), "--out", str(tmp_path / "pruned")]) == 0


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_recovery_trains_on_the_gpu_and_hands_back_cpu_models(lora_rank: int) -> None:
    """``recover(device="cuda")``: teacher, student and data on the GPU (bf16 autocast, fused AdamW),
    the KL falls; afterwards the recovered model is on the CPU and the teacher where it was."""
    from planner.stages.recover import recover
    from tests.test_recover import _lm_setup, _settings

    adapter, pruned, task = _lm_setup()
    recovered, log = recover(
        adapter, pruned, task, _settings(lora_rank=lora_rank, lr=3e-2 if lora_rank else 3e-3), device="cuda"
    )
    assert min(p.kl for p in log.validation[1:]) < 0.9 * log.validation[0].kl
    assert {p.device.type for p in recovered.parameters()} == {"cpu"}
    assert {p.device.type for p in adapter.model.parameters()} == {"cpu"}
    assert {p.dtype for p in recovered.parameters()} == {torch.float32}  # fp32 master weights
