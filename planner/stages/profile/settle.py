"""Settle the dense time a run plans with, just before planning (``planner.records.settling``).

The plans the solver would make at the target are built as whole models (``shrink_to_levels``: the
real shapes, so the real speed) and timed paired with the dense model by the caller's ``measure``
(verification's own timing, so the probes and the verdict share one estimator). Their measured /
predicted speedups rescale the table's dense time; the unit rows and the calibration curve are left
as profiled, and the cached table file is never changed.

Why the dense time and not the curve: within one process, whole models of any shape agree with the
curve to a few percent, while the dense model's own time moved by up to 8-11% between the profile and
verification (a noisy or unsettled dense sample, or a table measured in another process); one
number is the common factor of every predicted speedup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from planner.models import LoadedModel
from planner.records.settling import DenseSettling, Probe
from planner.records.verification import Verification
from profilers import LatencyTable

SHRINKABLE = ("dense", "heads", "neurons")
"""Level structures a probe can be built with (``shrink_to_levels``)."""

Measure = Callable[[Mapping[str, nn.Module]], Verification]
"""Times ``{"dense": model, name: model, ...}`` paired and interleaved; ``"dense"`` is the reference."""


def settle_dense(
    loaded: LoadedModel,
    table: LatencyTable,
    probe_levels: Mapping[str, Sequence[int]],
    measure: Measure,
) -> tuple[LatencyTable, DenseSettling]:
    """Time the probe plans against the dense model and return the table to plan with and the record.

    Args:
        probe_levels: name -> one level index per unit (the table's unit order), e.g. the uniform and
            plain-DP plans at the target speedup. Duplicate level lists are timed once.
        measure: see ``Measure``.

    Returns:
        ``table`` with ``meta.dense_ms`` replaced by the settled dense time (the same table when the
        probes were not trusted), and the ``DenseSettling`` record.
    """
    adapter = loaded.adapter
    units = adapter.units()
    names = [u.name for u in units]
    dense_ms = table.meta.dense_ms
    distinct: dict[tuple[int, ...], str] = {}
    for name, levels in probe_levels.items():
        shrinkable = all(u.levels[int(i)].structure in SHRINKABLE for u, i in zip(units, levels, strict=True))
        if adapter.supports_shrinking and shrinkable:  # weight-sparsity levels have no shrunk shape to time
            distinct.setdefault(tuple(int(x) for x in levels), name)
    if not distinct:
        return table, DenseSettling.from_probes(dense_ms, (), rounds=0, busy=False)
    models: dict[str, nn.Module] = {"dense": adapter.model}
    for levels, name in distinct.items():
        models[name] = adapter.shrink_to_levels(dict(zip(names, levels, strict=True)))
    verification = measure(models)
    probes = []
    for levels, name in distinct.items():
        estimate = verification.speedup(name)
        predicted = dense_ms / table.predict_ms(list(levels))
        probes.append(Probe(name, predicted, estimate.value, estimate.low, estimate.high))
    settling = DenseSettling.from_probes(dense_ms, tuple(probes), rounds=verification.rounds, busy=verification.busy)
    if not settling.applied:
        return table, settling
    return LatencyTable(frame=table.frame, meta=dataclasses.replace(table.meta, dense_ms=settling.dense_ms)), settling


__all__ = ["Measure", "settle_dense"]
