"""The typed settings records that ``RunConfig`` derives and the stages receive: where and how latency
is measured (``Measurement``), the candidate levels (``LevelGrid``), the search (``SearchSettings``),
where its candidates run (``ExecutorSettings``) and recovery (``RecoverySettings``).

Frozen values, importing nothing of the planner's but its errors: a stage gets one of these, never
the whole run configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.errors import PlannerError

if TYPE_CHECKING:
    from profilers.profiler import ProfilerSettings


@dataclass(frozen=True)
class Measurement:
    """Where and how latency is measured: the runtime, device and dtype, the input shape and phase,
    threads, and the sampling (rounds per workload, warm-up calls, interleaving seed)."""

    runtime: str
    device: str
    dtype: str
    batch_size: int
    seq_len: int
    threads: int
    rounds: int
    warmup: int
    phase: str
    generate_tokens: int
    seed: int
    max_rounds: int | None = None
    stability: float = 0.05
    max_seconds: float | None = None
    execution: str = "eager"
    """"eager" or "cuda-graphs" (resolved: never "auto")."""

    def profiler_settings(self) -> ProfilerSettings:
        """The profiler's settings for this measurement (what to time, how many rounds)."""
        from profilers.profiler import ProfilerSettings

        return ProfilerSettings(
            runtime=self.runtime,
            device=self.device,
            dtype=self.dtype,
            threads=self.threads,
            rounds=self.rounds,
            warmup=self.warmup,
            seed=self.seed,
            max_rounds=self.max_rounds,
            stability=self.stability,
            max_seconds=self.max_seconds,
            execution=self.execution,
        )


@dataclass(frozen=True)
class LevelGrid:
    """The candidate levels: FFN neuron grid step (None: about 25 levels) and generic layers'
    unstructured sparsity levels (None: 12)."""

    ffn_step: int | None = None
    sparsity_levels: int | None = None


@dataclass(frozen=True)
class SearchSettings:
    """The search over per-unit levels: which, how long, on how many calibration examples, judged by
    which loss ("kl": divergence from the dense model; "ce": the task loss)."""

    method: str
    seconds: float | None
    """Time limit of one search (s); None: only ``evaluations``."""
    examples: int
    objective: str
    seed: int
    evaluations: int | None = None
    """Stop after this many candidate evaluations (None: only the time limit)."""
    batch: int | None = None
    """SPDY's candidates proposed per round (None: one per worker); the evolution's batch is its generation."""


@dataclass(frozen=True)
class ExecutorSettings:
    """``--executor``, ``--workers`` (None: one per GPU on CUDA, 1 on the CPU), ``--ray-address``
    (None: ``RAY_ADDRESS``, else a local Ray started and shut down by the run)."""

    kind: str = "local"
    workers: int | None = None
    address: str | None = None


@dataclass(frozen=True)
class RecoverySettings:
    """How to distil (see the module docstring). Budgets: ``seconds`` and/or ``tokens`` (None: no
    limit of that kind; at least one must be set)."""

    seconds: float | None = None
    tokens: int | None = None
    lr: float = 3e-4
    """Peak learning rate (AdamW); ``planner.config.RECOVER_LR`` holds the measured defaults per task."""
    warmup_steps: int = 20
    batch_size: int = 2
    """Examples per micro-batch. SmolLM2 at seq 128 on 2 CPU cores: 2 x 4 peaked at 4.25 GB RSS where
    4 x 2 peaked at 5.04 GB, at the same tokens/s (the full-vocabulary logits dominate activations)."""
    accumulation: int = 4
    """Micro-batches per optimiser step (effective batch = batch_size x accumulation)."""
    weight_decay: float = 0.01
    eval_every: int = 25
    validation: int = 16
    """Training examples held out of the steps for the curve and early stopping
    (``planner.config.RECOVER_VALIDATION`` holds the measured defaults per task)."""
    patience: int = 8
    """Evaluations without improvement before the early stop (4 stopped MiniLM's noisy curve at 61 s
    of 300, 2 points short of where 8 ended)."""
    checkpoint_every: int = 25
    seed: int = 0
    lora_rank: int = 0
    """0: full fine-tuning; r > 0: only rank-r LoRA adapters train (``planner.stages.recover.lora``, peft), merged into
    the weights before the model leaves recovery."""

    def __post_init__(self) -> None:
        if self.seconds is None and self.tokens is None:
            raise PlannerError("recovery needs a budget: --recover-seconds and/or --recover-tokens (both > 0).")
        if self.seconds is not None and not self.seconds > 0:
            raise PlannerError(f"The 'recover_seconds' parameter must be > 0. Got {self.seconds!r} instead.")
        if self.tokens is not None and not self.tokens > 0:
            raise PlannerError(f"The 'recover_tokens' parameter must be > 0. Got {self.tokens!r} instead.")
        if not self.lr > 0:
            raise PlannerError(f"The 'recover_lr' parameter must be > 0. Got {self.lr!r} instead.")
        for name in ("batch_size", "accumulation", "eval_every", "validation", "patience", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PlannerError(f"The '{name}' parameter must be an integer >= 1. Got {value!r} instead.")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise PlannerError(f"The 'recover_lora' parameter must be an integer >= 0. Got {self.lora_rank!r} instead.")

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (everything but the time budget)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "seconds"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
