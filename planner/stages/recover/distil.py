"""The recover stage: knowledge distillation of the pruned model from the dense one (after Minitron).

Loss: KL divergence of the pruned model's output distribution from the dense model's, temperature 1,
on the task's logits (next-token distributions over the full vocabulary for causal LMs; class logits
of the model's own head or of the fitted head for classification), averaged per position. No
cross-entropy term: the teacher's soft targets carry more than the labels (``../shared/reference/
recovery.md``). The teacher runs in inference mode and is never copied; the student is a copy of the
pruned model (the caller's is untouched) trained in full (fp32 master weights; bf16 autocast on
CUDA), AdamW with linear warm-up then cosine decay to 1/10, gradient accumulation for the effective
batch. Shapes never change, so recovery cannot undo the speed.

Data: ``task.training`` (the training split minus every calibration example: never the test set,
never the final pick's examples); a small validation slice of it (``validation`` examples) is held
out of the steps and scored every ``eval_every`` steps (the curve; early stop after ``patience``
evaluations without improvement). Budget: ``seconds`` and/or ``tokens`` (the first reached stops).

A long job: a checkpoint (student, optimiser, schedule, data position, RNG state, log) is written
atomically every ``checkpoint_every`` steps; a run with the same settings resumes from it and, with a
token budget, ends exactly where an uninterrupted run would (the data order is drawn per epoch from
the seed). A checkpoint from another model or settings is refused.

Memory (SmolLM2 at 1.5x on the CPU: 95 M parameters): the student's weights, gradients and AdamW's
two moments are 4 copies of it; the best weights of the curve wait on disk (``planner.stages.recover.files``)
instead of a fifth copy in memory, AdamW runs fused where torch has it
(no foreach temporaries), and the callers that no longer need the un-recovered model train it in
place (``in_place``) instead of copying it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.config.settings import RecoverySettings
from planner.errors import PlannerError
from planner.stages.recover.files import CHECKPOINT_VERSION, BestWeights, save_checkpoint
from planner.stages.recover.lora import add_lora, merge_lora
from planner.tasks.base import Task, Tokenized
from profilers.profiler import progress_bar


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation on the validation slice: after ``step`` steps, ``tokens`` trained on, ``seconds``."""

    step: int
    tokens: int
    seconds: float
    kl: float


@dataclass(frozen=True)
class RecoveryLog:
    """What recovery did: steps, tokens and seconds, the training loss per step, the validation curve
    (KL to the dense model on held-out training examples), the learning rate per step, why it stopped."""

    steps: int
    tokens: int
    seconds: float
    train_loss: tuple[float, ...]
    validation: tuple[CurvePoint, ...]
    lr: tuple[float, ...]
    stopped: str
    examples: int
    validation_examples: int
    settings: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def learning_rate(step: int, *, peak: float, warmup: int, total: int | None) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak / 10`` at
    ``total`` steps (constant after the warm-up when the total is unknown: a time-only budget)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean KL(teacher || student) per position, temperature 1, full distribution.

    Shapes: logits (B, C) or (B, S, V); ``mask`` (B, S) of positions that count (causal LMs: all
    but the last position predict a token), or None.
    """
    log_student = F.log_softmax(student.float(), dim=-1)
    log_teacher = F.log_softmax(teacher.float(), dim=-1)
    per_position = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1)
    if mask is None:
        return per_position.mean()
    weights = mask.to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def _logits(task: Task, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The task's logits and the positions that count (LMs: every position but the last)."""
    logits = task.logits(model, ids, mask)
    if logits.dim() == 3:
        return logits[:, :-1], mask[:, 1:]
    return logits, None


def validation_kl(task: Task, student: nn.Module, teacher: nn.Module, tokens: Tokenized, batch_size: int) -> float:
    """Mean distillation loss on ``tokens`` (no gradients)."""
    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for ids, mask, _ in tokens.batches(batch_size):
            t_logits, weights = _logits(task, teacher, ids, mask)
            s_logits, _ = _logits(task, student, ids, mask)
            total += float(distillation_loss(s_logits, t_logits, weights)) * ids.shape[0]
            count += ids.shape[0]
    student.train(was_training)
    return total / max(count, 1)


def split_training(task: Task, validation: int) -> tuple[Tokenized, Tokenized]:
    """(examples to train on, validation slice): the last ``validation`` training examples are held out."""
    data = task.training
    n = len(data)
    if n < 2:
        raise PlannerError(
            f"recovery needs training examples beyond the calibration set; the task has {n} (the training split "
            "minus every calibration example). Give more data, or lower --calibration-size."
        )
    held = min(validation, max(1, n // 5))
    return data.subset(range(n - held)), data.subset(range(n - held, n))


def _order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def recover(
    adapter: Any,
    model: nn.Module,
    task: Task,
    settings: RecoverySettings,
    *,
    checkpoint: str | Path | None = None,
    model_key: str = "",
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
    stop_after_steps: int | None = None,
    on_eval: Callable[[nn.Module, CurvePoint], None] | None = None,
    in_place: bool = False,
    device: str = "cpu",
) -> tuple[nn.Module, RecoveryLog]:
    """Distil ``model`` (pruned) from ``adapter.model`` (dense) on ``task.training``.

    Args:
        checkpoint: file to checkpoint to and resume from (None: no checkpoints).
        model_key: identifies the pruned model (e.g. its plan's fingerprint); a checkpoint written
            for another model or other settings is refused.
        stop_after_steps: end after this many steps as if interrupted (tests of resuming).
        on_eval: called with the student (eval mode) after every validation evaluation, e.g. by a
            benchmark to measure the test metric along the curve (its time counts against the budget).
        in_place: train ``model`` itself (saves a copy of it; the caller's un-recovered weights are
            gone) instead of a copy.
        device: where to train ("cuda": teacher, student and data move there for the duration, bf16
            autocast; the recovered model comes back on the CPU and the teacher where it was).

    Returns:
        (the recovered model: a copy of ``model``, or ``model`` itself with ``in_place``; its ``RecoveryLog``).
        A finished run leaves its checkpoint files for the caller to remove with ``discard_checkpoint``
        once the result is saved (a crash before that still resumes).
    """
    train, validation = split_training(task, settings.validation)
    head = getattr(task, "head", None)  # a fitted head stays as fitted: no gradients pile up in it
    frozen = [p for p in head.parameters() if p.requires_grad] if isinstance(head, nn.Module) else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        student = model if in_place else copy.deepcopy(model)
        adapters = None if not settings.lora_rank else add_lora(student, settings.lora_rank)
        if adapters is not None:
            log(f"      recovery trains {adapters.trainable:,} LoRA parameters (rank {settings.lora_rank})")
        path = None if checkpoint is None else Path(checkpoint)
        with BestWeights.beside(path) as best, _on_device(adapter.model, student, device):
            student, record = _distil(adapter, student, task, settings, train.to(device), validation.to(device),
                                      path, best, model_key, progress, log, stop_after_steps, on_eval)  # fmt: skip
        return (student if adapters is None else merge_lora(student, adapters)), record
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextlib.contextmanager
def _on_device(teacher: nn.Module, student: nn.Module, device: str) -> Iterator[None]:
    """Teacher and student on ``device`` for the block (moved, never copied); afterwards the student is
    on the CPU and the teacher where it was."""
    home = next(iter(teacher.parameters())).device
    try:
        teacher.to(device)
        student.to(device)
        yield
    finally:
        teacher.to(home)
        student.to("cpu")
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()


def _distil(
    adapter: Any,
    student: nn.Module,
    task: Task,
    settings: RecoverySettings,
    train: Tokenized,
    validation: Tokenized,
    path: Path | None,
    best: BestWeights,
    model_key: str,
    progress: bool,
    log: Callable[[str], None],
    stop_after_steps: int | None,
    on_eval: Callable[[nn.Module, CurvePoint], None] | None,
) -> tuple[nn.Module, RecoveryLog]:
    """The training loop of ``recover`` (arguments as there; ``student`` is trained in place)."""
    teacher = adapter.model
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    torch.manual_seed(settings.seed)
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimiser = adamw(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    tokens_per_example = int(train.input_ids.shape[1])
    tokens_per_step = tokens_per_example * settings.batch_size * settings.accumulation
    total_steps = None if settings.tokens is None else max(1, math.ceil(settings.tokens / tokens_per_step))
    device_type = next(iter(parameters)).device.type if parameters else "cpu"
    state = {"step": 0, "position": 0, "epoch": 0, "best": math.inf, "best_step": 0, "since_best": 0, "seconds": 0.0}
    history: dict[str, list[Any]] = {"train_loss": [], "validation": [], "lr": []}
    identity = {"version": CHECKPOINT_VERSION, "model": model_key, "settings": settings.fingerprint()}
    resumed = 0
    if path is not None and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("identity") != identity:
            raise PlannerError(
                f"{path} is a recovery checkpoint of another run (other model or settings); delete it or choose "
                "another output folder."
            )
        student.load_state_dict(saved["student"])
        optimiser.load_state_dict(saved["optimiser"])
        state, history = saved["state"], saved["history"]
        torch.set_rng_state(saved["torch_rng"])
        del saved
        resumed = int(state["step"])
        best.resume(int(state["best_step"]))
        log(f"      recovery resumed at step {resumed} from {path}")
    if not history["validation"]:
        kl = validation_kl(task, student, teacher, validation, settings.batch_size)
        history["validation"].append(CurvePoint(0, 0, 0.0, kl))
        state["best"] = kl
        best.save(student, 0)
        if on_eval is not None:
            student.eval()
            on_eval(student, history["validation"][0])
            student.train()
    start = time.perf_counter() - float(state["seconds"])
    stopped = "budget"
    with progress_bar(total_steps, "recovery", unit="step", enabled=progress) as bar:
        bar.update(int(state["step"]))
        while True:
            step = int(state["step"])
            elapsed = time.perf_counter() - start
            if total_steps is not None and step >= total_steps:
                stopped = "tokens"
                break
            if settings.seconds is not None and elapsed >= settings.seconds:
                stopped = "seconds"
                break
            if stop_after_steps is not None and step - resumed >= stop_after_steps:
                stopped = "interrupted"
                break
            lr = learning_rate(step, peak=settings.lr, warmup=settings.warmup_steps, total=total_steps)
            for group in optimiser.param_groups:
                group["lr"] = lr
            optimiser.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(settings.accumulation):
                order = _order(settings.seed, int(state["epoch"]), len(train))
                begin = int(state["position"])
                index = order[begin : begin + settings.batch_size]
                state["position"] = begin + len(index)
                if state["position"] >= len(train):
                    state["epoch"], state["position"] = int(state["epoch"]) + 1, 0
                batch = train.subset(index)
                with torch.inference_mode():
                    t_logits, weights = _logits(task, teacher, batch.input_ids, batch.attention_mask)
                t_logits = t_logits.clone()
                autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device_type == "cuda")
                with autocast:
                    s_logits, _ = _logits(task, student, batch.input_ids, batch.attention_mask)
                    loss = distillation_loss(s_logits, t_logits, weights) / settings.accumulation
                loss.backward()
                step_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            state["step"] = step + 1
            state["seconds"] = time.perf_counter() - start
            history["train_loss"].append(step_loss)
            history["lr"].append(lr)
            bar.update(1)
            rate = tokens_per_step * (step + 1 - resumed) / max(float(state["seconds"]), 1e-9)
            bar.set_postfix(loss=f"{step_loss:.4f}", tokens_per_s=f"{rate:.0f}")
            if (step + 1) % settings.eval_every == 0:
                kl = validation_kl(task, student, teacher, validation, settings.batch_size)
                point = CurvePoint(step + 1, (step + 1) * tokens_per_step, float(state["seconds"]), kl)
                history["validation"].append(point)
                log(f"      recovery step {step + 1}: train KL {step_loss:.4f}, validation KL {kl:.4f}")
                if on_eval is not None:
                    student.eval()
                    on_eval(student, point)
                    student.train()
                if kl < state["best"] - 1e-6:
                    state["best"], state["best_step"], state["since_best"] = kl, step + 1, 0
                    best.save(student, step + 1)
                else:
                    state["since_best"] = int(state["since_best"]) + 1
                    if state["since_best"] >= settings.patience:
                        stopped = "early stop"
                        break
            if path is not None and (step + 1) % settings.checkpoint_every == 0:
                save_checkpoint(path, identity, student, optimiser, state, history)
                best.checkpointed(int(state["best_step"]))
    teacher.train(teacher_was_training)
    if stopped != "interrupted" and history["validation"]:
        last = history["validation"][-1]
        if (step_done := int(state["step"])) != last.step:  # the final weights get a point on the curve
            kl = validation_kl(task, student, teacher, validation, settings.batch_size)
            point = CurvePoint(step_done, step_done * tokens_per_step, float(state["seconds"]), kl)
            history["validation"].append(point)
            if on_eval is not None:
                student.eval()
                on_eval(student, point)
            if kl < state["best"] - 1e-6:
                state["best"], state["best_step"] = kl, step_done
        if int(state["best_step"]) != step_done:  # the best point of the curve, not the last
            optimiser.state.clear()  # its moments are not needed any more: room for the loaded weights
            student.zero_grad(set_to_none=True)
            student.load_state_dict(best.load(int(state["best_step"])))
    elif stopped == "interrupted" and path is not None:
        save_checkpoint(path, identity, student, optimiser, state, history)
        best.checkpointed(int(state["best_step"]))
    student.zero_grad(set_to_none=True)
    student.eval()
    record = RecoveryLog(
        steps=int(state["step"]),
        tokens=int(state["step"]) * tokens_per_step,
        seconds=float(state["seconds"]),
        train_loss=tuple(float(x) for x in history["train_loss"]),
        validation=tuple(history["validation"]),
        lr=tuple(float(x) for x in history["lr"]),
        stopped=stopped,
        examples=len(train),
        validation_examples=len(validation),
        settings=dataclasses.asdict(settings),
        resumed_from=resumed,
    )
    return student, record


def adamw(parameters: list[nn.Parameter], **options: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it for the parameters' device (no foreach temporaries of the
    model's size: 50 MB less peak on SmolLM2's CPU recovery), else the default implementation."""
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(parameters, **options)  # type: ignore[arg-type]
