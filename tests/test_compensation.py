"""FLAP's bias compensation as an option of the Fisher and magnitude backends: a pruned layer whose
inputs are the dense model's keeps the dense mean output (by linearity), with or without mask tuning."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from planner.backends import FisherBackend, MagnitudeBackend
from planner.backends.compensation import output_projection
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

    scale = float(dense.abs().max())
    torch.testing.assert_close(compensated, dense, rtol=1e-4, atol=1e-5 * scale)
    assert float((plain - dense).abs().max()) > 20 * float((compensated - dense).abs().max())


def test_magnitude_needs_data_only_to_compensate() -> None:
    assert MagnitudeBackend().needs_task is False
    assert MagnitudeBackend(compensate=True).needs_task is True
    adapter = TINY_ADAPTERS["llama"]()
    unit = adapter.units()[0]
    keep = first_kept(unit, unit.levels[-2])
    plan = plan_of(UnitChoice(unit.name, unit.kind, len(unit.levels) - 2, "heads", kept=len(keep), keep=keep))
    with pytest.raises(Exception, match="calibration data"):
        MagnitudeBackend(compensate=True).apply(adapter, plan, None)
