"""The solve stage: latency table + error table + speedup target -> a validated ``Plan``.

``solve_plan`` runs one of the solvers (``solvers.SOLVERS``) on the table's per-unit costs and the
backend's per-unit errors (or takes levels a search already chose), then asks the backend which
heads / neurons each structured level keeps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

import solvers
from planner.backends.base import Backend
from planner.backends.depth import INFLUENCE
from planner.backends.flap import elements_kept, z_key
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.records.error_table import ErrorTable
from planner.records.plan import Plan, UnitChoice, choices_from_levels, library_versions
from profilers import LatencyTable


def unreachable_message(targets: str, best: float) -> str:
    """``targets`` ("2x is", "targets [...] are") above ``best`` (the table's maximum speedup): what to ask for.

    The advice rounds down, so that asking for exactly the number it prints is reachable.
    """
    advice = math.floor(best * 100) / 100
    return f"{targets} not reachable on this device; the fastest plan gives {best:.2f}x. Ask for at most {advice:.2f}x."


def check_table_matches(table: LatencyTable, loaded: LoadedModel, *, force: bool = False) -> None:
    """The table must be for this model (fingerprint) and list exactly its units and levels."""
    if table.meta.model_fingerprint != loaded.fingerprint and not force:
        raise PlannerError(
            f"the latency table was measured for model {table.meta.model_name!r} (fingerprint "
            f"{table.meta.model_fingerprint}), not {loaded.spec!r} (fingerprint {loaded.fingerprint}); profile this "
            "model, or pass --force-table if the weights differ but the shapes are the same."
        )
    units = loaded.adapter.units()
    names = table.units()
    if names != [u.name for u in units]:
        raise PlannerError(
            f"the latency table's units ({names[:2]}...) do not match the model's ({[u.name for u in units][:2]}...); "
            "profile this model with the same settings."
        )
    for unit, costs in zip(units, table.unit_costs(), strict=True):
        if len(unit.levels) != costs.size:
            raise PlannerError(
                f"unit {unit.name}: the table has {costs.size} levels but the model has {len(unit.levels)} "
                "(different --ffn-step or --sparsity-levels?); profile again with the same grid."
            )


def solve_plan(
    *,
    loaded: LoadedModel,
    table: LatencyTable,
    scores: ErrorTable,
    backend: Backend,
    speedup: float,
    solver: str = "dp",
    seed: int = 0,
    force_table: bool = False,
    levels: list[int] | None = None,
    solver_label: str | None = None,
) -> Plan:
    """Choose one level per unit meeting ``speedup`` (measured table) with the least estimated error.

    Args:
        scores: the backend's error table (same units as the table).
        solver: "dp" (default), "greedy", "uniform" or "milp" (see ``solvers.SOLVERS``).
        levels: already chosen levels (e.g. from the local search); skips the solver.

    Raises:
        InfeasibleBudgetError: the target is above the table's maximum speedup (the message says it).
    """
    if not speedup > 1.0:
        raise PlannerError(f"The 'speedup' parameter must be > 1.0. Got {speedup!r} instead.")
    try:
        if solver not in PEER_SOLVERS:
            solvers.get_solver(solver)
    except ValueError as exc:
        raise PlannerError(str(exc)) from None
    check_table_matches(table, loaded, force=force_table)
    units = loaded.adapter.units()
    if list(scores.units) != [u.name for u in units]:
        raise PlannerError("the error table's units do not match the model's; score this model again.")
    costs = table.unit_costs()
    budget = table.budget_ms(speedup)
    fastest = float(sum(c.min() for c in costs))
    if fastest > budget + solvers.BUDGET_SLACK_MS:
        best = table.max_speedup()
        raise solvers.InfeasibleBudgetError(
            unreachable_message(f"{speedup:g}x is", best),
            budget_ms=budget,
            min_cost_ms=fastest,
            target_speedup=speedup,
            max_speedup=best,
        )
    if levels is None:
        levels = _solve_levels(solver, loaded, costs, scores, budget)
    choices = choices_from_levels(units, levels, table.frame)
    for i, (unit, choice) in enumerate(zip(units, choices, strict=True)):
        if choice.structure in ("heads", "neurons") and choice.kept is not None:
            choices[i] = _with_keep(choice, backend.select(scores, unit, unit.levels[choice.level]))
        elif choice.structure == "dense" and choice.kind in ("attention", "ffn"):
            choices[i] = _with_keep(choice, tuple(range(int(choice.kept or 0))))
    predicted = table.predict_ms(levels)
    return Plan(
        model_name=loaded.adapter.name,
        model_fingerprint=loaded.fingerprint,
        architecture=loaded.adapter.architecture,
        table=table.meta.provenance(),
        target_speedup=float(speedup),
        predicted_ms=predicted,
        predicted_speedup=table.meta.dense_ms / predicted,
        budget_ms=float(budget),
        backend=backend.name,
        solver=solver_label or solver,
        seed=seed,
        units=tuple(choices),
        versions=library_versions(),
    )


PROBE_SOLVERS = ("uniform", "dp")
"""The plans timed before planning to settle the dense time (``planner.stages.profile.settle``): the
two shapes a first plan takes (the final pick keeps uniform unless another plan wins with confidence;
searched plans are re-weighted DP plans)."""


def probe_plans(loaded: LoadedModel, table: LatencyTable, scores: ErrorTable, speedup: float) -> dict[str, list[int]]:
    """Levels of the ``PROBE_SOLVERS`` plans at ``speedup`` on ``table`` (solver name -> one level per
    unit); empty when the target is beyond the table's reach (planning will say so)."""
    if speedup > table.max_speedup():
        return {}
    costs, budget = table.unit_costs(), table.budget_ms(speedup)
    return {name: _solve_levels(name, loaded, costs, scores, budget) for name in PROBE_SOLVERS}


def depth_levels(loaded: LoadedModel, costs: list[np.ndarray], scores: ErrorTable, budget_ms: float) -> list[int]:
    """ShortGPT's allocation: whole layers removed, lowest Block Influence first, until the plan fits."""
    units = loaded.adapter.units()
    influence = _extra(scores, INFLUENCE, "depth")
    removed = [next(i for i, level in enumerate(u.levels) if not level.kept) for u in units]
    layers = [int(u.layer or 0) for u in units]
    return list(solvers.solve_depth(costs, layers, removed, influence, budget_ms).levels)


def flap_levels(loaded: LoadedModel, costs: list[np.ndarray], scores: ErrorTable, budget_ms: float) -> list[int]:
    """FLAP's allocation: one global threshold over the standardised scores, the lowest that fits."""
    units = loaded.adapter.units()
    z = [_extra(scores, z_key(u.name), "flap") for u in units]
    kept = [np.array([elements_kept(u, level) for level in u.levels]) for u in units]
    return list(solvers.solve_threshold(costs, z, kept, budget_ms).levels)


def _extra(scores: ErrorTable, key: str, method: str) -> np.ndarray:
    if key not in scores.extra:
        raise PlannerError(f"the {method} allocation needs {method} scores ({key!r} is missing); score with {method}.")
    return np.asarray(scores.extra[key], dtype=np.float64)


PEER_SOLVERS = {"depth": depth_levels, "flap": flap_levels}
"""Allocations by the rules of the methods practitioners use instead of a planner (not minimisers of
an error: ``solvers.peers``); each reads its own backend's scores."""


def _solve_levels(
    solver: str, loaded: LoadedModel, costs: list[np.ndarray], scores: ErrorTable, budget_ms: float
) -> list[int]:
    """One level per unit from the registry's ``solver`` (or a peer's rule) within ``budget_ms``."""
    if solver in PEER_SOLVERS:
        return PEER_SOLVERS[solver](loaded, costs, scores, budget_ms)
    options: dict[str, Any] = {}
    if solver == "uniform":  # uniform cuts every unit by the same share of its own range
        options["fractions"] = [u.compression() for u in loaded.adapter.units()]
    return list(solvers.get_solver(solver)(costs, scores.unit_errors(), budget_ms, **options).levels)


def _with_keep(choice: UnitChoice, keep: tuple[int, ...]) -> UnitChoice:
    if choice.kept is not None and len(keep) != choice.kept:
        raise PlannerError(f"unit {choice.unit}: the backend kept {len(keep)} units, the level needs {choice.kept}.")
    return dataclasses.replace(choice, keep=tuple(int(i) for i in np.asarray(keep)))
