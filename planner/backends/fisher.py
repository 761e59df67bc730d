"""Post-training Fisher pruning (Kwon et al., NeurIPS 2022), no retraining.

- score: gradients of the task loss (cross-entropy with the true labels) with respect to all-ones
  head and neuron masks, one gradient per calibration mini-batch; diagonal empirical Fisher per
  head and neuron; the error of keeping k units of a block is half the Fisher mass of the others.
- select: mask rearrangement per block (greedy swap on the block Fisher), counts unchanged.
- apply: layer-wise mask tuning (damped least squares scales for kept heads and neurons against a
  teacher, layer by layer, student inputs from the already tuned layers), scales folded into the
  output-projection and W2 columns, then physical shrinking.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.backends.base import Calibration, ErrorTable, layer_of, structured_keep
from planner.backends.fisher_math import damped_scales, diagonal_fisher, rearrange, removal_errors
from planner.errors import PlannerError
from planner.models.bert import BertAdapter, find_bert
from planner.models.masks import bert_masks
from planner.plan import Plan
from profilers.profiler import progress_bar


def mask_gradients(adapter: Any, calibration: Calibration, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch gradients of the task loss w.r.t. all-ones masks.

    Returns:
        (head_grads (batches, L, H), neuron_grads (batches, L, N)), float64.
    """
    layers = adapter.layers
    head_mask = torch.ones(len(layers), adapter.num_heads, requires_grad=True)
    neuron_mask = torch.ones(len(layers), adapter.intermediate_size, requires_grad=True)
    heads, neurons = [], []
    was_training = adapter.model.training
    adapter.model.eval()
    batches = -(-len(calibration.tokens) // calibration.batch_size)
    try:
        with progress_bar(batches, "Fisher gradients", unit="batch", enabled=progress) as bar:
            for ids, mask, labels in calibration.tokens.batches(calibration.batch_size):
                grad_heads, grad_neurons = _batch_gradients(
                    layers, head_mask, neuron_mask, calibration, ids, mask, labels
                )
                heads.append(grad_heads.double().numpy())
                neurons.append(grad_neurons.double().numpy())
                bar.update(1)
    finally:
        adapter.model.train(was_training)
    return np.stack(heads), np.stack(neurons)


def _batch_gradients(  # type: ignore[no-untyped-def]
    layers, head_mask, neuron_mask, calibration, ids, mask, labels
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of one mini-batch's mean cross-entropy w.r.t. the head and neuron masks."""
    with bert_masks(layers, head_mask=head_mask, neuron_mask=neuron_mask):
        logits = calibration.forward(ids, mask)
        assert labels is not None  # Calibration guarantees labels
        loss = F.cross_entropy(logits, labels)
    grads = torch.autograd.grad(loss, [head_mask, neuron_mask])
    return grads[0], grads[1]


@dataclass(frozen=True)
class _LayerTargets:
    """Teacher pre-LayerNorm sums of one layer over the calibration set, (n, S, D) each."""

    attention: torch.Tensor
    ffn: torch.Tensor


class FisherBackend:
    """Fisher scores, mask rearrangement and mask tuning for BERT-family encoders.

    Args:
        tune: run layer-wise mask tuning in ``apply`` (needs calibration data).
        rearrange: use block-Fisher rearrangement in ``select`` (else plain top-k by Fisher).
        teacher_masks: (head_mask (L, H), neuron_mask (L, N)) defining the tuning teacher; None = the
            dense model.
    """

    name = "fisher"

    def __init__(
        self,
        *,
        tune: bool = True,
        rearrange: bool = True,
        teacher_masks: tuple[torch.Tensor, torch.Tensor] | None = None,
        progress: bool = False,
    ) -> None:
        self.progress = progress
        self.tune = tune
        self.rearrange = rearrange
        self.teacher_masks = teacher_masks

    def _check(self, adapter: Any, calibration: Calibration | None) -> Calibration:
        if adapter.architecture != "bert":
            raise PlannerError(
                "the Fisher backend prunes heads and neurons of BERT-family encoders; use --backend magnitude "
                "for generic Linear/Conv2d models."
            )
        if calibration is None:
            raise PlannerError(
                "the Fisher backend needs labelled calibration data and a task head (pass --data, e.g. 'bbc'); "
                "without labels the Fisher would be zero. Use --backend magnitude for data-free pruning."
            )
        return calibration

    def score(self, adapter: Any, calibration: Calibration | None) -> ErrorTable:
        calib = self._check(adapter, calibration)
        head_grads, neuron_grads = mask_gradients(adapter, calib, progress=self.progress)
        errors, importance = [], {}
        for unit in adapter.units():
            layer = layer_of(unit.name)
            grads = head_grads[:, layer, :] if unit.kind == "attention" else neuron_grads[:, layer, :]
            fisher = diagonal_fisher(grads)
            importance[unit.name] = fisher
            errors.append(removal_errors(fisher, [int(lv.kept) for lv in unit.levels]))
        units = tuple(u.name for u in adapter.units())
        extra = {"head_grads": head_grads, "neuron_grads": neuron_grads}
        return ErrorTable(units, tuple(errors), importance, "fisher: 1/2 * removed diagonal Fisher", extra)

    def select(self, scores: ErrorTable, unit: str, kept: int) -> tuple[int, ...]:
        grads = scores.extra["head_grads" if unit.endswith(".attention") else "neuron_grads"][:, layer_of(unit), :]
        total = grads.shape[1]
        if not self.rearrange:
            order = np.argsort(-scores.importance[unit], kind="stable")
            return tuple(sorted(int(i) for i in order[:kept]))
        removed = set(rearrange(grads, total - kept))
        return tuple(i for i in range(total) if i not in removed)

    def apply(self, adapter: Any, plan: Plan, calibration: Calibration | None) -> nn.Module:
        heads, neurons = structured_keep(plan)
        model = adapter.model
        if self.tune:
            calib = self._check(adapter, calibration)
            head_scale, neuron_scale = tune_masks(
                adapter, heads, neurons, calib, teacher_masks=self.teacher_masks, progress=self.progress
            )
            model = fold_scales(adapter, head_scale, neuron_scale)
        return BertAdapter(model, name=adapter.name, ffn_step=adapter.ffn_step).shrink(heads, neurons)


def binary_masks(adapter: Any, heads: dict[int, Any], neurons: dict[int, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, H) and (L, N) 0/1 masks from layer -> kept indices (layers not named keep all)."""
    layers = len(adapter.layers)
    head_mask = torch.ones(layers, adapter.num_heads)
    neuron_mask = torch.ones(layers, adapter.intermediate_size)
    for layer, keep in heads.items():
        head_mask[layer] = 0.0
        head_mask[layer, list(keep)] = 1.0
    for layer, keep in neurons.items():
        neuron_mask[layer] = 0.0
        neuron_mask[layer, list(keep)] = 1.0
    return head_mask, neuron_mask


@torch.no_grad()
def _teacher_targets(
    adapter: Any, calibration: Calibration, masks: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[list[_LayerTargets], torch.Tensor, list[torch.Tensor | None]]:
    """Teacher pre-LayerNorm sums per layer, the embeddings output (the student's layer-0 input,
    embeddings are never pruned) and the per-batch attention masks the model gives its layers."""
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
    try:
        for ids, mask, _ in calibration.tokens.batches(calibration.batch_size):
            if masks is None:
                adapter.bert(input_ids=ids, attention_mask=mask)
            else:
                with bert_masks(layers, head_mask=masks[0], neuron_mask=masks[1]):
                    adapter.bert(input_ids=ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    targets = [_LayerTargets(torch.cat(a), torch.cat(f)) for a, f in zip(att, ffn, strict=True)]
    return targets, torch.cat(embeddings), layer_masks


@torch.no_grad()
def tune_masks(
    adapter: Any,
    heads: dict[int, Any],
    neurons: dict[int, Any],
    calibration: Calibration,
    *,
    teacher_masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-wise damped least-squares scales for kept heads and neurons.

    Layers are processed in order; a layer's student input comes from the already tuned layers.
    Attention: target = teacher's pre-LN attention sum - output bias - student residual, one
    column per kept head (its contribution through W_O), over non-padding tokens. FFN: normal
    equations ``G = (W2^T W2) * (A A^T)`` over kept neurons. If a solve fails or a scale leaves
    [-10, 10], tuning stops and that layer and the rest keep binary masks.

    Returns:
        (head_scale (L, H), neuron_scale (L, N)): 0 for removed units, tuned scale for kept ones.
    """
    head_scale, neuron_scale = binary_masks(adapter, heads, neurons)
    targets, hidden, layer_masks = _teacher_targets(adapter, calibration, teacher_masks)
    tokens = calibration.tokens
    token_mask = tokens.attention_mask.to(hidden.dtype).unsqueeze(-1)  # (n, S, 1)
    batch = calibration.batch_size
    tuning = True
    with progress_bar(len(adapter.layers), "mask tuning", unit="layer", enabled=progress) as bar:
        for index, layer in enumerate(adapter.layers):
            attention = layer.attention
            size = attention.self.attention_head_size
            w_o = attention.output.dense.weight  # (D, H*d)
            b_o = attention.output.dense.bias
            kept_heads = torch.nonzero(head_scale[index]).flatten()
            # --- attention: per-head contributions through W_O -------------------------------------
            gram = torch.zeros(len(kept_heads), len(kept_heads), dtype=torch.float64)
            rhs = torch.zeros(len(kept_heads), dtype=torch.float64)
            contexts = []
            for batch_index, start in enumerate(range(0, hidden.shape[0], batch)):
                x = hidden[start : start + batch]
                context = attention.self(x, layer_masks[batch_index])[0]  # (b, S, H*d)
                contexts.append(context)
                if tuning and len(kept_heads):
                    blocks = [slice(h * size, (h + 1) * size) for h in kept_heads.tolist()]
                    c = torch.stack([context[..., b] @ w_o[:, b].T for b in blocks], dim=-1)  # (b, S, D, K)
                    m = token_mask[start : start + batch].unsqueeze(-1)
                    y = (targets[index].attention[start : start + batch] - b_o - x).unsqueeze(-1)
                    gram += torch.einsum("bsdk,bsdj->kj", c * m, c).double()
                    rhs += torch.einsum("bsdk,bsdj->k", c * m, y).double()
            if tuning and len(kept_heads):
                scales = damped_scales(gram.numpy(), rhs.numpy())
                if scales is None:
                    tuning = False
                else:
                    head_scale[index, kept_heads] = torch.from_numpy(scales).float()
            context_all = torch.cat(contexts)
            scale_cols = head_scale[index].repeat_interleave(size)
            att_out = attention.output.LayerNorm(F.linear(context_all * scale_cols, w_o, b_o) + hidden)
            # --- FFN: normal equations over kept neurons ---------------------------------------------
            w1, b1 = layer.intermediate.dense.weight, layer.intermediate.dense.bias
            w2, b2 = layer.output.dense.weight, layer.output.dense.bias
            kept = torch.nonzero(neuron_scale[index]).flatten()
            activations = layer.intermediate.intermediate_act_fn(F.linear(att_out, w1, b1))  # (n, S, N)
            if tuning and len(kept):
                a = (activations[..., kept] * token_mask).reshape(-1, len(kept)).double()
                w2k = w2[:, kept].double()
                y = ((targets[index].ffn - b2 - att_out) * token_mask).reshape(-1, w2.shape[0]).double()
                gram_ffn = (w2k.T @ w2k) * (a.T @ a)
                rhs_ffn = (a * (y @ w2k)).sum(dim=0)
                scales = damped_scales(gram_ffn.numpy(), rhs_ffn.numpy())
                if scales is None:
                    tuning = False
                else:
                    neuron_scale[index, kept] = torch.from_numpy(scales).float()
            hidden = layer.output.LayerNorm(F.linear(activations * neuron_scale[index], w2, b2) + att_out)
            bar.update(1)
    return head_scale, neuron_scale


def fold_scales(adapter: Any, head_scale: torch.Tensor, neuron_scale: torch.Tensor) -> nn.Module:
    """A copy of the model with head scales folded into W_O's column blocks and neuron scales into
    W2's columns (never into W1: the activation is nonlinear). Removed units get scale 0 but are
    cut by the shrinking that follows."""
    model = copy.deepcopy(adapter.model)
    bert, _ = find_bert(model)
    layers = bert.encoder.layer
    with torch.no_grad():
        for index, layer in enumerate(layers):
            size = layer.attention.self.attention_head_size
            layer.attention.output.dense.weight.mul_(head_scale[index].repeat_interleave(size))
            layer.output.dense.weight.mul_(neuron_scale[index])
    return model
