"""Export a pruned decoder as GGUF and prove that llama.cpp runs it as torch does.

``export_checked_gguf`` writes ``model.gguf`` under a temporary name, loads it in llama.cpp (KV cache in
float32), and compares, on held-out token windows, llama.cpp's logits with the pruned torch model's:
the largest logit difference on the first window (f32), top-1 agreement (every position) and the
perplexity of the windows. Only a file that passes is renamed into place, with ``gguf_check.json``
beside it; one that fails is removed and the run stops with the failed check named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from planner.errors import PlannerError
from planner.models.gguf_writer import GGUFBlock, source_gguf_of, write_gguf
from planner.records.gguf import GGUFCheck
from profilers.atomic import atomic_path
from profilers.errors import ProfileError
from profilers.runtimes.llamacpp import LlamaCppModel, build_info, require_llama_cpp

CHECK_WINDOWS = 8
"""Held-out windows the check compares (enough to resolve 1% of perplexity on 2 cores in seconds)."""
GGUF_NAME = "model.gguf"
CHECK_NAME = "gguf_check.json"


def export_checked_gguf(
    model: nn.Module,
    folder: Path,
    *,
    weight_type: str,
    spec: str,
    tokenizer_folder: Path | None,
    windows: torch.Tensor,
    threads: int | None = None,
) -> GGUFCheck:
    """Write ``folder/model.gguf`` and ``folder/gguf_check.json`` once llama.cpp passed the check.

    Args:
        windows: (n, seq) int64 held-out token ids (the first ``CHECK_WINDOWS`` are compared).

    Raises:
        PlannerError: llama.cpp is missing, refuses the file, or computes something else (the file is
            removed; the message names the failed check).
    """
    try:
        require_llama_cpp()
    except ProfileError as exc:
        raise PlannerError(str(exc)) from None
    target = folder / GGUF_NAME
    with atomic_path(target) as tmp:
        blocks = write_gguf(
            model,
            tmp,
            weight_type=weight_type,
            source_gguf=source_gguf_of(spec),
            tokenizer_folder=tokenizer_folder,
            name=folder.name or "pruned",
        )
        check = check_gguf(tmp, model, windows[:CHECK_WINDOWS], weight_type=weight_type, blocks=blocks, threads=threads)
        if not check.passed:
            raise PlannerError(f"{target}: {check.text()}. The file was not kept; please report this with the plan.")
    with atomic_path(folder / CHECK_NAME) as tmp_check:
        tmp_check.write_text(json.dumps(check.as_dict(), indent=2) + "\n", encoding="utf-8")
    return check


def check_gguf(
    path: Path,
    model: nn.Module,
    windows: torch.Tensor,
    *,
    weight_type: str,
    blocks: list[GGUFBlock],
    threads: int | None = None,
) -> GGUFCheck:
    """Compare llama.cpp running ``path`` with ``model`` on ``windows`` ((n, seq) int64 token ids)."""
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise PlannerError("the GGUF check needs at least one held-out window of two or more tokens.")
    seq = int(windows.shape[1])
    runner = LlamaCppModel(path, n_ctx=seq, threads=threads or max(1, os.cpu_count() or 1), exact=True)
    try:
        nll_cpp, nll_torch, agree, positions = 0.0, 0.0, 0, 0
        max_diff = max_logit = 0.0
        for index, ids in enumerate(windows):
            ours = runner.logits(ids.tolist())
            with torch.inference_mode():
                theirs = model(input_ids=ids[None], use_cache=False).logits[0].float().numpy()
            if index == 0:
                max_diff = float(np.abs(ours - theirs).max())
                max_logit = float(np.abs(theirs).max())
            agree += int((ours[:-1].argmax(-1) == theirs[:-1].argmax(-1)).sum())
            positions += seq - 1
            target = ids[1:].numpy()
            nll_cpp += _nll(ours[:-1], target)
            nll_torch += _nll(theirs[:-1], target)
    finally:
        runner.close()
    return GGUFCheck(
        weight_type=weight_type,
        windows=int(windows.shape[0]),
        tokens=seq,
        max_abs_logit_diff=max_diff,
        max_abs_logit=max_logit,
        top1_agreement=agree / positions,
        perplexity_llamacpp=float(np.exp(nll_cpp / positions)),
        perplexity_torch=float(np.exp(nll_torch / positions)),
        blocks=len(blocks),
        notes=tuple(f"layer {b.layer}: {b.note}" for b in blocks if b.note),
        build=build_info(),
    )


def held_out_windows(task: object) -> torch.Tensor:
    """(n, seq) int64 token ids of a causal-LM task's held-out windows (what the check compares on)."""
    test = getattr(task, "test", None)
    ids = getattr(test, "input_ids", None)
    if not isinstance(ids, torch.Tensor) or getattr(task, "name", "") != "causal-lm":
        raise PlannerError("--gguf exports decoders checked on causal-lm text windows; use --task causal-lm.")
    return ids


def _nll(logits: np.ndarray, target: np.ndarray) -> float:
    """Summed negative log-likelihood of ``target`` ((S,) ids) under ``logits`` ((S, vocab))."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1))
    return float((log_z - shifted[np.arange(len(target)), target]).sum())


def refuse_gguf_early(spec: str, model: nn.Module, tokenizer_folder: Path | None) -> None:
    """Exit-2 checks before any work: the binding is installed and the writer can express the model."""
    from planner.models.gguf_writer import refusal

    try:
        require_llama_cpp()
    except ProfileError as exc:
        raise PlannerError(f"--gguf checks every export in llama.cpp, but {exc}") from None
    problem = refusal(model, source_gguf=source_gguf_of(spec), tokenizer_folder=tokenizer_folder)
    if problem:
        raise PlannerError(problem)
