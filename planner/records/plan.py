"""The plan file: which level every unit gets, why, and for which model, device and shape.

A ``Plan`` is saved as JSON with a schema version; ``planner/schemas/plan.schema.json`` (shipped in
the package) describes it for other tools. Loading validates everything and fails with a clear
message on a newer schema version, a missing or mistyped field, or a plan for another model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from profilers.atomic import atomic_write_text

PLAN_SCHEMA_VERSION = 2
"""Version 2 added per-unit ``layer``, ``groups`` and ``modules`` (version 1 plans must be re-created)."""


@dataclass(frozen=True)
class UnitChoice:
    """The level chosen for one unit.

    Attributes:
        unit: unit name (as in the latency table).
        kind: "attention", "ffn", "linear" or "conv2d".
        level: level index in the table (0 = dense).
        structure: "dense", "heads", "neurons", "channels", "unstructured" or "2:4".
        kept: heads / neurons / channels kept (structured levels), else None.
        keep: which heads / neurons are kept (indices into the dense unit), else None.
        sparsity: fraction of weights zeroed (weight-sparsity levels), else None.
        impl: kernel the table measured as fastest for this level ("shrunk", "masked", "csr", ...).
        latency_ms: the table's latency for this unit at this level (ms).
        size: heads / neurons / output channels of the dense unit (what ``kept`` is out of).
        layer: the transformer layer of the unit (None for generic layers).
        groups: key/value groups kept (grouped-query attention), else None.
        modules: role -> module path of the weights the unit owns (what exports name).
    """

    unit: str
    kind: str
    level: int
    structure: str
    kept: int | None = None
    keep: tuple[int, ...] | None = None
    sparsity: float | None = None
    impl: str = "dense"
    latency_ms: float = 0.0
    size: int | None = None
    layer: int | None = None
    groups: int | None = None
    modules: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A per-unit compression plan for one model on one device, runtime and input shape."""

    model_name: str
    model_fingerprint: str
    architecture: str
    table: Mapping[str, Any]
    target_speedup: float
    predicted_ms: float
    predicted_speedup: float
    budget_ms: float
    backend: str
    solver: str
    seed: int
    units: tuple[UnitChoice, ...]
    versions: Mapping[str, str]
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = PLAN_SCHEMA_VERSION

    def choice(self, unit: str) -> UnitChoice:
        for c in self.units:
            if c.unit == unit:
                return c
        raise KeyError(f"unit {unit!r} is not in this plan")

    def levels(self) -> dict[str, int]:
        """unit -> level index."""
        return {c.unit: c.level for c in self.units}

    def cut(self) -> tuple[tuple[Any, ...], ...]:
        """What applying the plan depends on, hashable: each unit's level, structure, kept heads / neurons
        and sparsity (not the target or the prediction, which differ between plans that cut the same)."""
        return tuple((c.unit, c.level, c.structure, c.keep, c.sparsity) for c in self.units)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (what ``plan.json`` holds)."""
        data = dataclasses.asdict(self)
        data["table"] = dict(self.table)
        data["versions"] = dict(self.versions)
        for unit, choice in zip(data["units"], self.units, strict=True):
            unit["modules"] = dict(choice.modules)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the plan atomically (temp file + rename)."""
        target = Path(path)
        atomic_write_text(target, self.to_json())
        return target

    @classmethod
    def load(cls, path: str | Path, *, expected_fingerprint: str | None = None) -> Plan:
        """Read and validate a plan; ``expected_fingerprint`` rejects plans for another model."""
        source = Path(path)
        if not source.is_file():
            raise PlannerError(f"plan file {source} does not exist; create one with `planner plan ... --out {source}`.")
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlannerError(f"{source} is not valid JSON ({exc}); re-create it with `planner plan`.") from None
        plan = plan_from_dict(data, source=str(source))
        if expected_fingerprint is not None and plan.model_fingerprint != expected_fingerprint:
            raise PlannerError(
                f"{source} is a plan for model {plan.model_name!r} (fingerprint {plan.model_fingerprint}), not for "
                f"this model (fingerprint {expected_fingerprint}); make a plan for this model with `planner plan`."
            )
        return plan


_TYPES: dict[str, tuple[type, ...]] = {
    "model_name": (str,),
    "model_fingerprint": (str,),
    "architecture": (str,),
    "table": (dict,),
    "target_speedup": (int, float),
    "predicted_ms": (int, float),
    "predicted_speedup": (int, float),
    "budget_ms": (int, float),
    "backend": (str,),
    "solver": (str,),
    "seed": (int,),
    "units": (list,),
    "versions": (dict,),
    "created": (str,),
    "schema_version": (int,),
}
_UNIT_TYPES: dict[str, tuple[type, ...]] = {
    "unit": (str,),
    "kind": (str,),
    "level": (int,),
    "structure": (str,),
    "kept": (int, type(None)),
    "keep": (list, type(None)),
    "sparsity": (int, float, type(None)),
    "impl": (str,),
    "latency_ms": (int, float),
    "size": (int, type(None)),
    "layer": (int, type(None)),
    "groups": (int, type(None)),
    "modules": (dict,),
}


def _check_fields(data: Mapping[str, Any], types: Mapping[str, tuple[type, ...]], where: str) -> None:
    missing = sorted(k for k in types if k not in data)
    if missing:
        raise PlannerError(f"{where} lacks fields {missing}; re-create the plan with `planner plan`.")
    for key, allowed in types.items():
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise PlannerError(f"{where}: field {key!r} must be {names}, got {value!r}.")


def plan_from_dict(data: Any, *, source: str = "plan") -> Plan:
    """Validate a decoded plan JSON object and build the ``Plan``."""
    if not isinstance(data, dict):
        raise PlannerError(f"{source} must hold a JSON object.")
    version = data.get("schema_version")
    if isinstance(version, int) and version > PLAN_SCHEMA_VERSION:
        raise PlannerError(
            f"{source} uses plan schema version {version}, newer than this planner reads ({PLAN_SCHEMA_VERSION}); "
            "upgrade latency-planner."
        )
    if version != PLAN_SCHEMA_VERSION:
        raise PlannerError(
            f"{source} has plan schema version {version!r}; this planner reads version {PLAN_SCHEMA_VERSION}. "
            "Re-create the plan with `planner plan`."
        )
    _check_fields(data, _TYPES, source)
    units = []
    for i, raw in enumerate(data["units"]):
        if not isinstance(raw, dict):
            raise PlannerError(f"{source}: units[{i}] must be an object.")
        _check_fields(raw, _UNIT_TYPES, f"{source}: units[{i}]")
        keep = raw["keep"]
        if keep is not None and not all(isinstance(k, int) and not isinstance(k, bool) for k in keep):
            raise PlannerError(f"{source}: units[{i}].keep must be a list of integers.")
        values = {k: raw[k] for k in _UNIT_TYPES}
        values["keep"] = None if keep is None else tuple(keep)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw["modules"].items()):
            raise PlannerError(f"{source}: units[{i}].modules must map roles to module paths (strings).")
        units.append(UnitChoice(**values))
    values = {k: data[k] for k in _TYPES}
    values["units"] = tuple(units)
    return Plan(**values)


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of plan files, as shipped in the package."""
    text = resources.files("planner").joinpath("schemas/plan.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def library_versions() -> dict[str, str]:
    """Versions recorded in plans (planner, torch, transformers, numpy, onnxruntime if imported)."""
    import sys

    import numpy
    import torch

    from planner.version import __version__

    out = {"planner": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__}
    for name in ("transformers", "onnxruntime"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "unknown"))
    return out


def choices_from_levels(units: Sequence[Any], levels: Sequence[int], table_frame: Any) -> list[UnitChoice]:
    """UnitChoice records (without ``keep``) for ``levels`` (one per unit, table order)."""
    out = []
    for unit, level in zip(units, levels, strict=True):
        lv = unit.levels[level]
        row = table_frame[(table_frame["unit"] == unit.name) & (table_frame["level"] == level)].iloc[0]
        out.append(
            UnitChoice(
                unit=unit.name,
                kind=unit.kind,
                level=int(level),
                structure=lv.structure,
                kept=lv.kept if lv.structure != "unstructured" and lv.structure != "2:4" else None,
                sparsity=lv.sparsity if lv.structure in ("unstructured", "2:4") else None,
                impl=str(row["impl"]),
                latency_ms=float(row["latency_ms"]),
                size=int(unit.size),
                layer=unit.layer,
                groups=lv.groups,
                modules=dict(unit.modules),
            )
        )
    return out
