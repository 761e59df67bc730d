"""Exports of a plan to other pruners' configuration formats.

Each export refuses, with a clear message, what the target cannot express. Formats:
- ``torch-pruning``: a JSON ratio file plus a generated Python snippet building ``pruning_ratio_dict``
  (module objects from names) and the head settings for Torch-Pruning.
- ``llmcompressor``: a recipe YAML; per-target ``sparsity`` lists follow ``model.named_modules()``
  order (llm-compressor aligns them that way, not to ``targets``), one modifier per mask structure.
- ``torch-ao``: the ``sparsifier.prepare(model, config)`` list for ``torch.ao.pruning``.
- ``nni``: an NNI 3.0 ``config_list`` (one entry per distinct ratio).
- ``hf-heads``: ``{layer: [heads to prune]}`` for ``prune_heads`` in transformers < 5.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.records.plan import Plan, UnitChoice
from profilers.atomic import atomic_write_text


def _module(choice: UnitChoice, role: str) -> str:
    """The module path the unit owns in ``role`` (e.g. "up": the FFN's first projection)."""
    if role not in choice.modules:
        raise PlannerError(
            f"the plan does not record the {role!r} module of {choice.unit}; re-create it with `planner plan`."
        )
    return choice.modules[role]


def _size(choice: UnitChoice, plan: Plan) -> int:
    """Dense size of a structured unit (heads H / neurons N / output channels) from the plan."""
    if choice.size is not None:
        return choice.size
    raise PlannerError(f"the plan does not record the dense size of {choice.unit}; re-create it with `planner plan`.")


def _refuse(fmt: str, choice: UnitChoice, why: str) -> PlannerError:
    return PlannerError(f"{fmt} cannot express unit {choice.unit} at level {choice.level} ({choice.structure}): {why}.")


def _exact_ratio(removed: int, size: int) -> float:
    """A ratio from which Torch-Pruning's rounding (``int(N * (1 - r))`` kept, ``ceil(r * H)`` heads
    removed) gives exactly ``removed`` of ``size``: half a unit below the exact fraction."""
    return (removed - 0.5) / size


def torch_pruning_spec(plan: Plan) -> dict[str, Any]:
    """What Torch-Pruning needs to cut exactly the plan's counts: per attention unit the query, key
    and value layers with the heads to remove, per channel unit the layer and the channels to keep.

    Refuses what Torch-Pruning 1.6 cannot do exactly: removing a whole block (0 kept), GPT-2's fused
    Conv1D projections, and head removal with grouped-query attention (its dependency graph couples
    query and key channels and ignores ``repeat_kv``; measured on SmolLM2: it either fails or removes
    one query head per removed KV group).
    """
    if plan.architecture == "gpt2":
        raise PlannerError(
            "torch-pruning cannot express GPT-2 plans: Torch-Pruning does not prune its fused Conv1D "
            "projections; use the plan with `planner apply`."
        )
    heads: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for c in plan.units:
        if c.structure in ("unstructured", "2:4"):
            raise _refuse("torch-pruning", c, "it prunes channels, not individual weights")
        if c.structure == "dense" or c.kept is None:
            continue
        size = _size(c, plan)
        if c.kept == 0:
            raise _refuse(
                "torch-pruning",
                c,
                "Torch-Pruning cannot remove a whole block (0 kept); plan with a lower "
                "target or apply the plan with `planner apply`",
            )
        if c.kind == "attention":
            if _grouped(c):
                raise _refuse(
                    "torch-pruning",
                    c,
                    "Torch-Pruning 1.6 cannot remove query heads or KV groups of "
                    "grouped-query attention exactly; apply the plan with `planner apply`",
                )
            roles = [_module(c, r) for r in ("query", "key", "value")]
            heads[_module(c, "query")] = {
                "modules": roles,
                "num_heads": size,
                "remove": size - c.kept,
                "ratio": _exact_ratio(size - c.kept, size),
            }
        else:
            layer = _module(c, "gate") if "gate" in c.modules else (_module(c, "up") if c.kind == "ffn" else c.unit)
            channels[layer] = {"size": size, "keep": c.kept, "ratio": _exact_ratio(size - c.kept, size)}
    return {
        "format": "latency-planner/torch-pruning",
        "format_version": 2,
        "model_name": plan.model_name,
        "heads": heads,
        "channels": channels,
    }


def _grouped(choice: UnitChoice) -> bool:
    """Whether an attention unit uses grouped-query attention (its levels count KV groups)."""
    return choice.groups is not None


def to_torch_pruning(plan: Plan) -> tuple[dict[str, Any], str]:
    """(spec JSON, Python snippet). The snippet runs Torch-Pruning's ``BasePruner`` so that it removes
    exactly the plan's number of heads and channels per layer (which ones, Torch-Pruning's importance
    decides), then updates the head counts Hugging Face modules keep."""
    spec = torch_pruning_spec(plan)
    snippet = f'''"""Apply a latency-planner plan with Torch-Pruning (tested with Torch-Pruning 1.6).

Generated for {plan.model_name}, target {plan.target_speedup:g}x (measured on {plan.table.get("device", "?")},
{plan.table.get("runtime", "?")}). Torch-Pruning picks WHICH heads / channels to remove with its own
importance; HOW MANY per layer comes from the plan, exactly.

Torch-Pruning removes attention heads only for query/key/value layers that also appear in
``pruning_ratio_dict`` (with ``pruning_ratio=0`` and head ratios alone it keeps every head), and it
rounds ``int(N * (1 - r))``: the ratios in the spec sit half a unit below the exact fractions.
"""
import json

import torch_pruning as tp


def prune(model, example_inputs, spec_file, importance=None, forward_fn=None):
    spec = json.load(open(spec_file))
    ratios, num_heads, head_ratios = {{}}, {{}}, {{}}
    for entry in spec["heads"].values():
        for name in entry["modules"]:
            layer = model.get_submodule(name)
            num_heads[layer] = entry["num_heads"]
            head_ratios[layer] = entry["ratio"]
            ratios[layer] = entry["ratio"]  # without this Torch-Pruning keeps the heads
    for name, entry in spec["channels"].items():
        ratios[model.get_submodule(name)] = entry["ratio"]
    pruner = tp.pruner.BasePruner(
        model, example_inputs, importance=importance or tp.importance.GroupMagnitudeImportance(),
        pruning_ratio=0.0, pruning_ratio_dict=ratios, num_heads=num_heads, prune_num_heads=bool(head_ratios),
        prune_head_dims=False, head_pruning_ratio_dict=head_ratios, forward_fn=forward_fn,
    )
    pruner.step()
    for entry in spec["heads"].values():  # Hugging Face attention modules keep head counts as attributes
        attention = model.get_submodule(entry["modules"][0].rsplit(".", 1)[0])
        kept = entry["num_heads"] - entry["remove"]
        if hasattr(attention, "num_attention_heads"):
            attention.num_attention_heads = kept
            attention.all_head_size = kept * attention.attention_head_size
    return model
'''
    return spec, snippet


def to_llmcompressor(plan: Plan, module_order: list[str] | None = None) -> str:
    """Recipe YAML; ``module_order`` is ``[n for n, _ in model.named_modules()]`` (default: plan order)."""
    order = {name: i for i, name in enumerate(module_order or [c.unit for c in plan.units])}
    groups: dict[str, list[tuple[str, float]]] = {"0:0": [], "2:4": []}
    for c in plan.units:
        if c.structure == "dense":
            continue
        if c.structure not in ("unstructured", "2:4"):
            raise _refuse("llmcompressor", c, "llm-compressor prunes weights (SparseGPT/Wanda), not heads or neurons")
        if c.unit not in order:
            raise PlannerError(f"{c.unit} is not among the model's named_modules(); pass the model's module order.")
        groups["2:4" if c.structure == "2:4" else "0:0"].append((c.unit, float(c.sparsity or 0.0)))
    lines = [
        "# Generated by latency-planner: per-layer sparsities measured against a latency budget.",
        f"# plan: {plan.model_name}, target {plan.target_speedup:g}x on {plan.table.get('device', '?')}.",
        "# The sparsity list follows model.named_modules() order, as llm-compressor aligns it.",
        "sparsity_stage:",
        "  sparsity_modifiers:",
    ]
    emitted = 0
    for structure, items in groups.items():
        if not items:
            continue
        items.sort(key=lambda item: order[item[0]])
        name = "SparseGPTModifier" if emitted == 0 else f"SparseGPTModifier_{emitted}"
        lines += [
            f"    {name}:",
            f"      sparsity: [{', '.join(f'{s:.6g}' for _, s in items)}]",
            f"      targets: [{', '.join(json.dumps(n) for n, _ in items)}]",
            f'      mask_structure: "{structure}"',
        ]
        emitted += 1
    if emitted == 0:
        raise PlannerError("the plan prunes no weights; there is nothing to export to llm-compressor.")
    return "\n".join(lines) + "\n"


def to_torch_ao(plan: Plan) -> list[dict[str, Any]]:
    """``sparsifier.prepare(model, config)`` list: unstructured levels and 2:4 blocks."""
    config: list[dict[str, Any]] = []
    for c in plan.units:
        if c.structure == "dense":
            continue
        if c.kind == "conv2d":
            raise _refuse("torch-ao", c, "its WeightNormSparsifier blocks work on 2-D (Linear) weights")
        if c.structure == "unstructured":
            config.append(
                {
                    "tensor_fqn": f"{c.unit}.weight",
                    "sparsity_level": float(c.sparsity or 0.0),
                    "sparse_block_shape": [1, 1],
                    "zeros_per_block": 1,
                }
            )
        elif c.structure == "2:4":
            config.append(
                {
                    "tensor_fqn": f"{c.unit}.weight",
                    "sparsity_level": 1.0,
                    "sparse_block_shape": [1, 4],
                    "zeros_per_block": 2,
                }
            )
        else:
            raise _refuse("torch-ao", c, "torch.ao.pruning masks weights and cannot remove heads or neurons")
    return config


def to_nni(plan: Plan) -> list[dict[str, Any]]:
    """NNI 3.0 ``config_list``: one entry per distinct ratio (channels/neurons or weight sparsity)."""
    by_ratio: dict[tuple[str, float], list[str]] = {}
    for c in plan.units:
        if c.structure == "dense":
            continue
        if c.structure == "2:4":
            raise _refuse("nni", c, "NNI 3.0 config lists have no N:M sparsity")
        if c.kind == "attention":
            raise _refuse("nni", c, "use the hf-heads or torch-pruning export for attention heads")
        if c.structure == "unstructured":
            key = ("weight", round(float(c.sparsity or 0.0), 6))
            name = c.unit
        else:
            assert c.kept is not None
            key = ("channel", (_size(c, plan) - c.kept) / _size(c, plan))
            names = [_module(c, r) for r in ("gate", "up") if r in c.modules] if c.kind == "ffn" else [c.unit]
            if c.kind == "ffn" and c.kept == 0:
                raise _refuse("nni", c, "NNI masks channels and cannot remove a whole block (0 kept)")
            by_ratio.setdefault(key, []).extend(names)
            continue
        by_ratio.setdefault(key, []).append(name)
    return [
        {"op_names": names, "sparse_ratio": ratio, "granularity": "default" if kind == "weight" else "out_channel"}
        for (kind, ratio), names in sorted(by_ratio.items())
    ]


def to_hf_heads(plan: Plan) -> dict[str, list[int]]:
    """``{layer: [heads to prune]}`` (transformers < 5 ``prune_heads``)."""
    if plan.architecture != "bert":
        raise PlannerError("hf-heads exports BERT attention heads; this plan is for a generic model.")
    out: dict[str, list[int]] = {}
    for c in plan.units:
        if c.kind != "attention" or c.structure == "dense":
            continue
        if c.keep is None:
            raise PlannerError(f"plan unit {c.unit} has no 'keep' list; re-create the plan with `planner plan`.")
        size = _size(c, plan)
        out[str(c.layer)] = [h for h in range(size) if h not in set(c.keep)]
    return out


EXPORTS: dict[str, Callable[[Plan], Any]] = {
    "torch-pruning": to_torch_pruning,
    "llmcompressor": to_llmcompressor,
    "torch-ao": to_torch_ao,
    "nni": to_nni,
    "hf-heads": to_hf_heads,
}


def export_plan(plan: Plan | str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Write ``plan`` in format ``fmt`` to ``out`` (torch-pruning also writes ``out`` with ``.py``)."""
    if fmt not in EXPORTS:
        raise PlannerError(f"unknown export format {fmt!r}; available: {', '.join(EXPORTS)}")
    chosen = plan if isinstance(plan, Plan) else Plan.load(plan)
    target = Path(out)
    result = EXPORTS[fmt](chosen)
    if fmt == "torch-pruning":
        data, snippet = result
        atomic_write_text(target, json.dumps(data, indent=2) + "\n")
        atomic_write_text(target.with_suffix(".py"), snippet)
        return [target, target.with_suffix(".py")]
    text = result if isinstance(result, str) else json.dumps(result, indent=2) + "\n"
    atomic_write_text(target, text)
    return [target]
