"""FLAP's bias compensation as an option of the Fisher and magnitude backends: a pruned layer whose
inputs are the dense model's keeps the dense mean output (by linearity, without mask tuning; with it
the intercept fitted jointly with the scales leaves a zero mean residual)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from planner.backends import FisherBackend, MagnitudeBackend
from planner.backends.tuning import output_projection
from planner.models.units import first_kept
from planner.records.plan import UnitChoice
from tests.tiny_models import TINY_ADAPTERS, TINY_TASKS, plan_of

BACKENDS: dict[str, Any] = {
    "magnitude": lambda compensate: MagnitudeBackend(compensate=compensate),
    "fisher (no tuning)": lambda compensate: FisherBackend(tune=False, compensate=compensate),
    "fisher (tuned)": lambda compensate: FisherBackend(compensate=compensate),
}
FAMILIES = ("bert", "llama", "gpt2")


def _layer0_mean(adapter: Any, model: torch.nn.Module, kind: str, task: Any) -> torch.Tensor:
    """(out,) mean output of layer 0's ``kind`` output projection over the calibration set's real tokens."""
    unit = next(u for u in adapter.units() if u.kind == kind and u.layer == 0)  # the dense model's
    rebound = adapter.rebind(model)
    outputs: list[torch.Tensor] = []
    real: list[torch.Tensor] = []
    handle = output_projection(rebound, unit).register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        with torch.no_grad():
            for ids, mask, _ in task.calibration.batches(task.batch_size):
                real.append(mask.bool())
                task.logits(model, ids, mask)
    finally:
        handle.remove()
    return torch.cat([o[m] for o, m in zip(outputs, real, strict=True)]).double().mean(dim=0)


@pytest.mark.parametrize("kind", ["attention", "ffn"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(BACKENDS))
def test_compensation_keeps_the_dense_mean_output_of_the_first_pruned_block(
    method: str, family: str, kind: str
) -> None:
    adapter = TINY_ADAPTERS[family]()
    task = TINY_TASKS[family](adapter)
    unit = next(u for u in adapter.units() if u.kind == kind and u.layer == 0)
    level = unit.levels[len(unit.levels) // 2]
    keep = first_kept(unit, level)
    structure = "heads" if kind == "attention" else "neurons"
    plan = plan_of(UnitChoice(unit.name, kind, level.index, structure, kept=len(keep), keep=keep, size=unit.size))

    dense = _layer0_mean(adapter, adapter.model, kind, task)
    compensated = _layer0_mean(adapter, BACKENDS[method](True).apply(adapter, plan, task), kind, task)
    plain = _layer0_mean(adapter, BACKENDS[method](False).apply(adapter, plan, task), kind, task)

    # what is left of the mean shift pruning causes: under 0.1% of it (the rest is float rounding)
    assert float((compensated - dense).abs().max()) <= 1e-3 * float((plain - dense).abs().max())


def test_magnitude_needs_data_only_to_compensate() -> None:
    assert MagnitudeBackend().needs_task is False
    assert MagnitudeBackend(compensate=True).needs_task is True
    adapter = TINY_ADAPTERS["llama"]()
    unit = adapter.units()[0]
    keep = first_kept(unit, unit.levels[-2])
    plan = plan_of(UnitChoice(unit.name, unit.kind, len(unit.levels) - 2, "heads", kept=len(keep), keep=keep))
    with pytest.raises(Exception, match="calibration data"):
        MagnitudeBackend(compensate=True).apply(adapter, plan, None)


@pytest.mark.parametrize("path", ["contributions", "features"])
def test_the_least_squares_intercept_recovers_scales_and_bias(path: str) -> None:
    """y = sum_k s_k w_k a_k + b on real tokens (padding carries garbage): the solver with an intercept
    finds s and b; without one the scales absorb the bias and miss."""
    from planner.backends.tuning import BlockSolver

    gen = torch.Generator().manual_seed(0)
    batch, seq, d, k = 4, 16, 6, 3
    a = torch.randn(batch, seq, k, generator=gen).double() * 4 + 1
    w = torch.randn(d, k, generator=gen).double() * 4
    s_true, b_true = torch.tensor([0.5, 1.5, 2.0]).double(), torch.randn(d, generator=gen).double() * 3
    mask = torch.ones(batch, seq, 1, dtype=torch.float64)
    mask[:, 12:] = 0
    y = torch.einsum("bsk,dk->bsd", a * s_true, w) + b_true + (1 - mask) * 100.0

    def solved(intercept: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        solver = BlockSolver(k, intercept=intercept)
        if path == "contributions":
            solver.add_contributions(torch.einsum("bsk,dk->bsdk", a, w), y, mask)
        else:
            rows = (a * mask).reshape(-1, k)
            solver.add_features(rows, w, (y * mask).reshape(-1, d), tokens=int(mask.sum()))
        scales = solver.solve()
        assert scales is not None
        return scales.double(), solver.shift

    scales, shift = solved(True)
    torch.testing.assert_close(scales, s_true, rtol=0, atol=1e-3)
    assert shift is not None
    torch.testing.assert_close(shift.double(), b_true, rtol=0, atol=1e-2)
    plain, none = solved(False)
    assert none is None and float((plain - s_true).abs().max()) > 0.05


def test_the_dense_moments_are_measured_once_until_a_weight_or_the_data_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every compensating recipe asks for the dense model's moments; one calibration pass serves them all,
    and a weight written in place or another task measures anew (never a stale answer)."""
    from planner.backends import activations

    adapter = TINY_ADAPTERS["llama"]()
    task = TINY_TASKS["llama"](adapter)
    modules = [output_projection(adapter, u) for u in adapter.units() if u.kind in ("attention", "ffn")]
    passes: list[int] = []
    real = activations.calibration_passes
    monkeypatch.setattr(activations, "calibration_passes", lambda *a: (passes.append(1), real(*a)))

    first = activations.dense_input_moments(task, adapter.model, modules)
    assert activations.dense_input_moments(task, adapter.model, modules) is first and len(passes) == 1
    fresh = activations.input_moments(task, adapter.model, modules)
    for held, measured in zip(first, fresh, strict=True):
        torch.testing.assert_close(held.total, measured.total)
    with torch.no_grad():
        adapter.model.get_input_embeddings().weight.mul_(2.0)
    changed = activations.dense_input_moments(task, adapter.model, modules)
    assert changed is not first and not torch.allclose(changed[0].total, first[0].total)
    other = TINY_TASKS["llama"](adapter)
    assert activations.dense_input_moments(other, adapter.model, modules) is not changed
    assert len(passes) == 4  # the first, the fresh one, after the write, for the other task
