"""Mask tuning for decoders (Llama family, GPT-2): the least-squares problems of each layer's
attention (one column per kept query head, through the output projection) and MLP (normal equations
over kept neurons, through the down projection). See ``planner.backends.tuning`` for the method.

Layers are processed in order; the teacher (the dense model, or a masked one) runs layer by layer
next to the student, so only the current layer's activations are held. Per layer and calibration
batch: one teacher run; one student run stopped at the attention's output projection (its input is
all the attention's least squares needs); one student run for the MLP's; and the tuned layer's
output, the next layer's student input, is that run's stream plus the tuned MLP's output computed
from the captured activations (a fourth run only where the MLP was emptied or a norm follows it).
About 2.4 layer runs where there were 4: a pass 28% shorter on SmolLM2 (``benchmarks/tuning_bench.py``).
Targets, per block (``TUNING_TARGETS``):
- ``"stream"`` (the default), pre-norm residual blocks (Llama, Qwen, Mistral, GPT-2): the teacher's
  residual stream after the block minus the student's residual input and the projection's bias (the
  student's earlier layers are already tuned, so this also corrects what they left); blocks with a
  norm after them (Gemma 3), whose stream the norm hides: the teacher's block output before that norm;
- ``"block"``, pre-norm blocks only: the teacher's block output less the projection's bias: each
  block reproduces what the dense block adds, from the student's own input. At mild cuts this wins
  (SmolLM2 BBC s128 at three quarters width: 182 test perplexity against 578 chasing the stream);
  where attention is emptied in most layers the stream's chase lets the kept MLPs make up for it
  (2.4x lower perplexity at decode 3x). No rule per block predicts which, so both are recipes
  (``planner.stages.apply.choose``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from planner.backends.tuning import BlockSolver, Tuned, binary_scales, input_columns, keep_shift
from planner.tasks.base import Task
from profilers.profiler import progress_bar

TUNING_TARGETS = ("stream", "block")
"""What each block's least squares fits: the dense residual stream, or the dense block's own output."""


def tuning_targets(adapter: Any) -> tuple[str, ...]:
    """The targets that differ for this model: both for pre-norm residual blocks, else the default."""
    return ("stream",) if getattr(adapter, "post_norms", False) else TUNING_TARGETS


def _bias(module: nn.Module) -> torch.Tensor | float:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else 0.0


@contextmanager
def _captured(module: nn.Module, *, inputs: bool) -> Iterator[list[torch.Tensor]]:
    """Record ``module``'s input (``inputs=True``) or output on every call in the block."""
    store: list[torch.Tensor] = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda m, args: store.append(args[0].detach()))
    else:
        handle = module.register_forward_hook(lambda m, args, out: store.append(out.detach()))
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def _layer_calls(adapter: Any, task: Task) -> tuple[list[torch.Tensor], list[list[dict[str, Any]]]]:
    """Per calibration batch: the first layer's input (embeddings, never pruned) and, per layer, the
    keyword arguments the model called it with (rotary embeddings, masks: they differ between layer
    types, e.g. Gemma 3's sliding and global layers)."""
    layers = adapter.layers
    inputs: list[torch.Tensor] = []
    calls: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []

    def hook(index: int):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if index == 0:
                inputs.append((args[0] if args else kwargs["hidden_states"]).detach())
            current.append({k: v for k, v in kwargs.items() if k != "hidden_states"})

        return record

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for ids, mask, _ in task.calibration.batches(task.batch_size):
            current = []
            adapter.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
            calls.append(current)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, calls


def _run(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


class _Reached(Exception):
    """Raised by ``_run_until`` at the module whose input was all a run needed."""


def _run_until(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], module: nn.Module) -> None:
    """Run ``layer`` until ``module`` is called, and stop there: pre-hooks registered on ``module``
    before this call (masks, captures) still run; ``module`` itself and the rest of the layer (for
    the attention's output projection: the MLP, three quarters of a SmolLM2 layer) do not."""

    def stop(_module: nn.Module, _args: tuple[Any, ...]) -> None:
        raise _Reached

    handle = module.register_forward_pre_hook(stop)
    try:
        _run(layer, hidden, kwargs)
    except _Reached:
        pass
    finally:
        handle.remove()


@torch.no_grad()
def tune_decoder(
    adapter: Any,
    keep: Mapping[str, Sequence[int]],
    task: Task,
    *,
    teacher_keep: Mapping[str, Sequence[int]] | None = None,
    intercept: bool = False,
    target: str = "stream",
    progress: bool = False,
) -> Tuned:
    """Scales for kept query heads and neurons of every layer (0 for removed ones); with ``intercept``
    also the bias shift of every tuned block's output projection; ``target`` one of ``tuning_targets``."""
    if target not in tuning_targets(adapter):
        raise ValueError(f"tuning target {target!r} is not one of this model's: {tuning_targets(adapter)}")
    scales = binary_scales(adapter, keep)
    shifts: dict[str, torch.Tensor] = {}
    teacher_masks = {} if teacher_keep is None else binary_scales(adapter, teacher_keep)
    student_in, calls = _layer_calls(adapter, task)
    teacher_in = [x.clone() for x in student_in]
    token_masks = [m.unsqueeze(-1).float() for _, m, _ in task.calibration.batches(task.batch_size)]
    post_norms = bool(getattr(adapter, "post_norms", False))  # Gemma 3: a norm after each block
    stream = target == "stream" and not post_norms
    with progress_bar(len(adapter.layers), "mask tuning", unit="layer", enabled=progress) as bar:
        for index, layer in enumerate(adapter.layers):
            att_unit, mlp_unit = adapter.unit_names(index)
            out_proj, down_proj = adapter.head_output(layer), adapter.neuron_output(layer)
            layer_masks = {name: teacher_masks[name] for name in (att_unit, mlp_unit) if name in teacher_masks}
            # Teacher: this layer's block outputs and its output (the next layer's teacher input).
            with (
                adapter.masked(layer_masks),
                _captured(out_proj, inputs=False) as att_t,
                _captured(down_proj, inputs=False) as mlp_t,
            ):
                teacher_in = [_run(layer, x, kw[index]) for x, kw in zip(teacher_in, calls, strict=True)]
            # Student, attention: per-head contributions through the output projection.
            kept = torch.nonzero(scales[att_unit]).flatten()
            if len(kept):
                with adapter.masked({att_unit: scales[att_unit]}), _captured(out_proj, inputs=True) as contexts:
                    for x, kw in zip(student_in, calls, strict=True):
                        _run_until(layer, x, kw[index], out_proj)
                solver = BlockSolver(len(kept), intercept=intercept)
                size = adapter.head_size
                bias = _bias(out_proj)
                for b, context in enumerate(contexts):
                    blocks = [torch.arange(h * size, (h + 1) * size) for h in kept.tolist()]
                    c = torch.stack([context[..., blk] @ input_columns(out_proj, blk).T for blk in blocks], dim=-1)
                    wanted = att_t[b] - bias
                    if stream:  # residual stream: teacher's after the block minus the student's input
                        wanted = wanted + teacher_residual(att_t, mlp_t, teacher_in, b, stage="attention")
                        wanted = wanted - student_in[b]
                    solver.add_contributions(c, wanted, token_masks[b])
                solved = solver.solve()
                if solved is not None:  # else this block keeps binary masks
                    scales[att_unit][kept] = solved
                    keep_shift(shifts, att_unit, solver)
            # Student, MLP: activations of kept neurons through the down projection.
            kept = torch.nonzero(scales[mlp_unit]).flatten()
            outputs: list[torch.Tensor] | None = None
            if len(kept):
                with (
                    adapter.masked({att_unit: scales[att_unit], mlp_unit: scales[mlp_unit]}),
                    _shifted({out_proj: shifts.get(att_unit)}),
                    _captured(out_proj, inputs=False) as att_s,
                    _captured(down_proj, inputs=True) as activations,
                ):
                    for x, kw in zip(student_in, calls, strict=True):
                        _run(layer, x, kw[index])
                solver = BlockSolver(len(kept), intercept=intercept)
                w = input_columns(down_proj, kept)  # (D, K)
                bias = _bias(down_proj)
                for b, a in enumerate(activations):
                    wanted = mlp_t[b] - bias
                    if stream:
                        residual = student_in[b] + att_s[b]
                        wanted = wanted + teacher_residual(att_t, mlp_t, teacher_in, b, stage="mlp") - residual
                    features = (a[..., kept] * token_masks[b]).reshape(-1, len(kept))
                    targets = (wanted * token_masks[b]).reshape(-1, w.shape[0])
                    solver.add_features(features, w, targets, tokens=int(token_masks[b].sum()))
                solved = solver.solve()
                if solved is not None:  # else this block keeps binary masks
                    scales[mlp_unit][kept] = solved
                    keep_shift(shifts, mlp_unit, solver)
                if not post_norms:
                    outputs = [
                        student_in[b] + att_s[b] + _mlp_output(a, kept, scales[mlp_unit], w, bias, shifts.get(mlp_unit))
                        for b, a in enumerate(activations)
                    ]
            if outputs is None:  # the MLP was emptied, or a norm follows it: run the tuned layer
                with (
                    adapter.masked({att_unit: scales[att_unit], mlp_unit: scales[mlp_unit]}),
                    _shifted({out_proj: shifts.get(att_unit), down_proj: shifts.get(mlp_unit)}),
                ):
                    outputs = [_run(layer, x, kw[index]) for x, kw in zip(student_in, calls, strict=True)]
            student_in = outputs
            bar.update(1)
    return Tuned(scales, shifts)


def _mlp_output(
    activations: torch.Tensor,
    kept: torch.Tensor,
    scales: torch.Tensor,
    columns: torch.Tensor,
    bias: torch.Tensor | float,
    shift: torch.Tensor | None,
) -> torch.Tensor:
    """The tuned MLP's output from its captured down-projection input, without running the layer again.

    Args:
        activations: (batch, seq, N) the down projection's input with the MLP's binary mask applied.
        kept: (K,) indices of the kept neurons; ``scales``: (N,) their tuned scales.
        columns: (D, K) the down projection's input columns of the kept neurons.
        bias: (D,) the down projection's bias (or 0.0); ``shift``: (D,) the fitted bias shift or None.

    Returns:
        (batch, seq, D): what the down projection gives with the tuned scales, as in a pre-norm
        layer's ``output = input + attention + mlp``.
    """
    out = (activations[..., kept] * scales[kept].to(activations.dtype)) @ columns.T + bias
    return out if shift is None else out + shift.to(out.dtype)


@contextmanager
def _shifted(shifts: Mapping[nn.Module, torch.Tensor | None]) -> Iterator[None]:
    """Add a fitted bias shift (D,) to each module's output while the block runs (registered before
    any capture, so captured outputs include it)."""
    handles = [
        module.register_forward_hook(lambda m, args, out, shift=shift: out + shift.to(out.dtype))
        for module, shift in shifts.items()
        if shift is not None
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def teacher_residual(
    att_t: list[torch.Tensor], mlp_t: list[torch.Tensor], teacher_out: list[torch.Tensor], b: int, *, stage: str
) -> torch.Tensor:
    """The teacher's residual stream before a block's output is added, for batch ``b``.

    The teacher's layer output is ``input + attention + mlp``; before the attention output is added
    the stream is ``output - attention - mlp``, before the MLP output ``output - mlp``.
    """
    if stage == "attention":
        return teacher_out[b] - att_t[b] - mlp_t[b]
    return teacher_out[b] - mlp_t[b]
