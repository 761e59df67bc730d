"""What the full-vocabulary distillation loss costs against a top-k one, per micro-batch of LM logits.

Recovery's loss for causal LMs is the KL over the whole vocabulary (``planner.stages.recover.
distillation_loss``). The alternative the field uses to save work keeps the dense model's top-k
tokens plus one bucket for the rest (as ``planner.tasks.CausalLM`` does for its held-out KL). This
times both, forward + backward, on random logits of SmolLM2's recovery micro-batch (2 x 127 x 49,152),
interleaved, after warm-up, medians of ``--rounds``; the saving is then compared with a recovery
step (4 micro-batches; ~8 s on the 2-core CPU).

Last line: ``full_ms=<x> topk_ms=<y> saving_per_step_s=<z>``.

Run: ``.venv/bin/python benchmarks/recover_loss_bench.py [--top-k 64] [--rounds 10]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from planner.stages.recover import distillation_loss


def top_k_loss(student: torch.Tensor, teacher: torch.Tensor, k: int) -> torch.Tensor:
    """KL(teacher || student) over the teacher's top ``k`` tokens plus the rest as one bucket."""
    log_teacher = F.log_softmax(teacher.float(), dim=-1)
    top, index = log_teacher.topk(k, dim=-1)
    log_student = F.log_softmax(student.float(), dim=-1).gather(-1, index)
    rest_teacher = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-6))
    rest_student = torch.log1p(-log_student.exp().sum(-1).clamp(max=1 - 1e-6))
    per_position = (top.exp() * (top - log_student)).sum(-1) + rest_teacher.exp() * (rest_teacher - rest_student)
    return per_position.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--shape", type=int, nargs=3, default=[2, 127, 49152], metavar=("B", "S", "V"))
    parser.add_argument("--micro-batches", type=int, default=4, help="per recovery step")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = torch.randn(*args.shape)
    losses = {
        "full": lambda s: distillation_loss(s, teacher, None),
        "topk": lambda s: top_k_loss(s, teacher, args.top_k),
    }
    times: dict[str, list[float]] = {name: [] for name in losses}
    for round_ in range(args.rounds + 2):  # 2 warm-up rounds
        for name, loss in losses.items():
            student = torch.randn(*args.shape, requires_grad=True)
            start = time.perf_counter()
            loss(student).backward()
            if round_ >= 2:
                times[name].append((time.perf_counter() - start) * 1e3)
    full, topk = (statistics.median(times[n]) for n in ("full", "topk"))
    spread = {n: f"{min(v):.1f}-{max(v):.1f}" for n, v in times.items()}
    print(f"full vocabulary: {full:.1f} ms [{spread['full']}]")
    print(f"top-{args.top_k} + rest: {topk:.1f} ms [{spread['topk']}]")
    print(f"full_ms={full:.1f} topk_ms={topk:.1f} saving_per_step_s={(full - topk) * args.micro_batches / 1e3:.3f}")


if __name__ == "__main__":
    main()
