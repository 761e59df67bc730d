"""Mask tuning for BERT encoders (post-norm): the least-squares problems of each layer's attention
(one column per kept head, through W_O) and FFN (normal equations over kept neurons), against the
teacher's pre-LayerNorm sums. See ``planner.backends.tuning`` for the method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from planner.backends.tuning import BlockSolver, Tuned, binary_scales, keep_shift
from planner.tasks.base import Task
from profilers.profiler import progress_bar


@torch.no_grad()
def _teacher_targets(
    adapter: Any, task: Task, teacher_keep: Mapping[str, Sequence[int]] | None
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, list[torch.Tensor | None]]:
    """Per layer the teacher's pre-LayerNorm sums (attention, FFN), each (n, S, D); the embeddings
    output (the student's layer-0 input; embeddings are never pruned); the per-batch attention masks
    the model gives its layers."""
    layers = adapter.layers
    att: list[list[torch.Tensor]] = [[] for _ in layers]
    ffn: list[list[torch.Tensor]] = [[] for _ in layers]
    embeddings: list[torch.Tensor] = []
    layer_masks: list[torch.Tensor | None] = []
    handles = []

    def mask_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        layer_masks.append(args[1] if len(args) > 1 else kwargs.get("attention_mask"))

    def pre_ln(store: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            store.append(args[0].detach().clone())

        return hook

    for index, layer in enumerate(layers):
        handles.append(layer.attention.output.LayerNorm.register_forward_pre_hook(pre_ln(att[index])))
        handles.append(layer.output.LayerNorm.register_forward_pre_hook(pre_ln(ffn[index])))
    handles.append(layers[0].register_forward_pre_hook(pre_ln(embeddings)))
    handles.append(layers[0].attention.register_forward_pre_hook(mask_hook, with_kwargs=True))
    masks = {} if teacher_keep is None else binary_scales(adapter, teacher_keep)
    try:
        with adapter.masked(masks):
            for ids, mask, _ in task.calibration.batches(task.batch_size):
                adapter.bert(input_ids=ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    targets = [(torch.cat(a), torch.cat(f)) for a, f in zip(att, ffn, strict=True)]
    return targets, torch.cat(embeddings), layer_masks


@torch.no_grad()
def tune_bert(
    adapter: Any,
    keep: Mapping[str, Sequence[int]],
    task: Task,
    *,
    teacher_keep: Mapping[str, Sequence[int]] | None = None,
    intercept: bool = False,
    target: str = "stream",
    progress: bool = False,
) -> Tuned:
    """Scales for kept heads and neurons of every layer (0 for removed ones); with ``intercept`` also
    the bias shift of every tuned block's output projection. ``target``: only ``"stream"`` (the
    teacher's pre-LayerNorm sums, which hold its residual stream)."""
    if target != "stream":
        raise ValueError(f"BERT mask tuning fits the teacher's residual stream only; got target {target!r}")
    scales = binary_scales(adapter, keep)
    shifts: dict[str, torch.Tensor] = {}
    targets, hidden, layer_masks = _teacher_targets(adapter, task, teacher_keep)
    token_mask = task.calibration.attention_mask.to(hidden.dtype).unsqueeze(-1)  # (n, S, 1)
    batch = task.batch_size
    with progress_bar(len(adapter.layers), "mask tuning", unit="layer", enabled=progress) as bar:
        for index, layer in enumerate(adapter.layers):
            att_unit, ffn_unit = adapter.unit_names(index)
            attention = layer.attention
            size = attention.self.attention_head_size
            w_o, b_o = attention.output.dense.weight, attention.output.dense.bias  # (D, H*d), (D,)
            kept_heads = torch.nonzero(scales[att_unit]).flatten()
            solver = BlockSolver(len(kept_heads), intercept=intercept)
            contexts = []
            for batch_index, start in enumerate(range(0, hidden.shape[0], batch)):
                x = hidden[start : start + batch]
                context = attention.self(x, layer_masks[batch_index])[0]  # (b, S, H*d)
                contexts.append(context)
                if len(kept_heads):
                    blocks = [slice(h * size, (h + 1) * size) for h in kept_heads.tolist()]
                    c = torch.stack([context[..., b] @ w_o[:, b].T for b in blocks], dim=-1)  # (b, S, D, K)
                    y = targets[index][0][start : start + batch] - b_o - x
                    solver.add_contributions(c, y, token_mask[start : start + batch])
            if len(kept_heads):
                solved = solver.solve()
                if solved is not None:  # else this block keeps binary masks
                    scales[att_unit][kept_heads] = solved
                    keep_shift(shifts, att_unit, solver)
            context_all = torch.cat(contexts)
            scale_cols = scales[att_unit].repeat_interleave(size)
            b_o = b_o + shifts.get(att_unit, 0.0)
            att_out = attention.output.LayerNorm(F.linear(context_all * scale_cols, w_o, b_o) + hidden)
            w1, b1 = layer.intermediate.dense.weight, layer.intermediate.dense.bias
            w2, b2 = layer.output.dense.weight, layer.output.dense.bias
            kept = torch.nonzero(scales[ffn_unit]).flatten()
            activations = layer.intermediate.intermediate_act_fn(F.linear(att_out, w1, b1))  # (n, S, N)
            if len(kept):
                ffn_solver = BlockSolver(len(kept), intercept=intercept)
                a = (activations[..., kept] * token_mask).reshape(-1, len(kept))
                y = ((targets[index][1] - b2 - att_out) * token_mask).reshape(-1, w2.shape[0])
                ffn_solver.add_features(a, w2[:, kept], y, tokens=int(token_mask.sum()))
                solved = ffn_solver.solve()
                if solved is not None:  # else this block keeps binary masks
                    scales[ffn_unit][kept] = solved
                    keep_shift(shifts, ffn_unit, ffn_solver)
            b2 = b2 + shifts.get(ffn_unit, 0.0)
            hidden = layer.output.LayerNorm(F.linear(activations * scales[ffn_unit], w2, b2) + att_out)
            bar.update(1)
    return Tuned(scales, shifts)
