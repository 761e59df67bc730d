"""The one run configuration: every user-facing setting, its default (declared here only) and its
constraint, validated before any work starts.

``RunConfig`` backs ``planner run``, ``sweep``, ``profile``, ``plan``, ``apply`` and ``verify``;
each command reads the fields it needs. Stages never receive it whole: they get the typed values
derived from it (``measurement()``, ``grid()``, ``search_settings()``) or single fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.config.quality import QualityLimit, parse_max_loss
from planner.config.settings import ExecutorSettings, LevelGrid, Measurement, RecoverySettings, SearchSettings
from planner.config.specs import spec_family, spec_kind
from planner.errors import PlannerError
from planner.params import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPTIONAL_POSITIVE_INT,
    POSITIVE_INT,
    SPEEDUP,
    Interval,
    Satisfies,
    one_of,
    validate,
)
from planner.paths import DEFAULT_CACHE

PHASES = ("prefill", "decode")
SEARCHES = ("auto", "evolution", "spdy", "none")
EXECUTORS = ("local", "ray")
BACKEND_NAMES = ("fisher", "magnitude")
"""The pruning backends' names (``planner.backends.BACKENDS`` registers one implementation each)."""
TASK_CHOICES = ("auto", "text-classification", "causal-lm")
"""``--task``: "auto" (from the model: causal LMs -> causal-lm) or a name of ``planner.tasks.TASKS``."""
DEFAULT_SEARCH = "spdy"
"""What ``--search auto`` runs when the search has a budget. Measured at equal time (60 s, 3 seeds,
held-out KL; benchmarks/RESULTS.md): on MiniLM SPDY's search beat the evolution in every seed (0.069
vs 0.080), on SmolLM2 the two tied (1.793 vs 1.789, spreads 0.035 / 0.023)."""
SEARCH_OBJECTIVES = ("kl", "ce")
SMOOTHING = ("none", "monotone")
RECOVER_LR = {"perplexity": 3e-4, "accuracy": 3e-5}
"""Recovery's default peak learning rate per task metric, measured (benchmarks/RESULTS.md,
2026-11-26): SmolLM2 at 1.5x, validation KL after 120 s: 1e-4 1.062, 3e-4 1.039, 1e-3 1.040; MiniLM at
3x on BBC News, 300 s: 1e-4 -> 91.44% accuracy, 3e-5 -> 94.82% (dense 96.85%)."""
RECOVER_VALIDATION = {"perplexity": 16, "accuracy": 64}
"""Training examples held out as recovery's validation curve. MiniLM at 3x on BBC News (2026-11-26):
with 16 documents the curve was too noisy to stop on (early stop after 61 s, recovered 94.82%); with 64
and a patience of 8 evaluations, 97.30% (dense 96.85%). LM windows are 8x the tokens: 16 of them."""
RECOVER_LORA_LR = {"perplexity": 3e-3, "accuracy": 3e-4}
"""The same with ``--recover-lora`` (adapters start at zero and train ~1% of the weights: a higher rate).
SmolLM2 at 1.5x, rank 16, validation KL after 120 s (2026-11-26): 1e-3 1.113, 3e-3 1.063 (full
fine-tuning at 3e-4: 1.054). Classification: 10x the full rate, as for LMs (not measured)."""
EXECUTION_CHOICES = ("auto", "eager", "cuda-graphs")
"""``auto``: CUDA graphs with torch on CUDA (how GPU inference is served: a launch-bound eager table
plans gutted models, ``../shared/reference/gpu.md``), eager everywhere else."""


def _names(registry: str) -> tuple[str, ...]:
    """Registered names of an extension point (imported only when a config is validated)."""
    if registry == "runtime":
        from profilers.runtimes import RUNTIMES

        return tuple(RUNTIMES)
    if registry == "backend":
        return BACKEND_NAMES
    if registry == "solver":
        import solvers

        return tuple(solvers.SOLVERS)
    if registry == "dtype":
        from profilers.runtimes import DTYPES

        return tuple(DTYPES)
    if registry == "device":
        from profilers.runtimes import DEVICES

        return tuple(DEVICES)
    if registry == "task":
        return TASK_CHOICES
    raise KeyError(registry)


def _model_spec_ok(spec: Any) -> bool:
    return spec_kind(spec) is not None


def _data_spec_ok(spec: Any) -> bool:
    return isinstance(spec, str) and (spec == "bbc" or Path(spec).exists())


MODEL_SPEC = Satisfies(
    "'minilm' or 'smollm2' (bundled), a Hugging Face model folder with config.json, a .gguf file, or "
    "'package.module:factory'",
    _model_spec_ok,
)
DATA_SPEC = Satisfies("'bbc' (bundled BBC News), an existing folder, or a .csv/.jsonl/.txt file", _data_spec_ok)


@dataclass(frozen=True)
class RunConfig:
    """Settings of every command (all have defaults; see ``planner <command> --help``).

    Times are seconds; ``threads=0`` means all cores; ``generate=N > 0`` plans for a reply of N
    tokens (prefill plus N decode steps) and overrides ``phase``.
    """

    model: str = "minilm"
    random_weights: bool = False
    """A bundled model's real shape with random weights (timing without its weight files; never for accuracy)."""
    data: str = "bbc"
    task: str = "auto"
    speedup: float = 2.0
    runtime: str = "torch"
    execution: str = "auto"
    """"auto", "eager" or "cuda-graphs" (see ``EXECUTION_CHOICES``; ``resolved_execution`` is what runs)."""
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    seq_len: int = 128
    phase: str = "prefill"
    generate: int = 0
    threads: int = 0
    rounds: int = 10
    max_rounds: int | None = None
    """Rounds at most per workload while its estimate has not settled; None: 3 x rounds."""
    stability: float = 0.05
    """A workload's estimate is settled when its 95% interval is narrower than this share of it."""
    profile_seconds: float | None = None
    """Time cap of one profile's sampling (s); None: only the round cap."""
    accept_noisy: bool = False
    """Reuse a cached table measured on a busy machine (by default it is measured again)."""
    warmup: int = 0
    ffn_step: int | None = None
    sparsity_levels: int | None = None
    smoothing: str = "none"
    backend: str = "fisher"
    solver: str = "dp"
    search: str = "auto"
    """"auto": the default search when ``search_seconds`` > 0 or ``search_evaluations`` is set, else none."""
    search_seconds: float = 60.0
    search_evaluations: int | None = None
    """Stop the search after this many candidate evaluations; None: only ``search_seconds``."""
    search_examples: int | None = None
    """Calibration examples the search scores on; None: half the calibration set for the evolution,
    the task's default (128 documents, 16 windows) for SPDY."""
    search_objective: str = "kl"
    search_batch: int | None = None
    """SPDY's candidates proposed per round (None: one per worker; fix it for the same plan with any
    number of workers). The evolution's batch is always its generation."""
    executor: str = "local"
    """Where the search evaluates candidates: "local" (this process) or "ray" (``planner.executors``)."""
    workers: int | None = None
    """Search workers with ``executor="ray"``; None: one per GPU on CUDA, 1 on the CPU."""
    ray_address: str | None = None
    """A Ray cluster to join (host:port); None: ``RAY_ADDRESS``, else a local Ray for the run."""
    calibration_size: int | None = None
    """Calibration examples; None: the task's default (256 documents, 64 windows of seq_len tokens)."""
    test_size: int | None = None
    """Held-out examples for the metric; None: the task's default (all test documents, 64 windows)."""
    guard_size: int | None = None
    """Guard examples, the split the quality limit is checked on, which no stage fits or tunes on
    (training examples outside the calibration set); None: the task's default (512 documents, 64
    windows; at most half of the training examples the calibration set leaves, the rest is recovery's)."""
    verify_rounds: int = 10
    corrections: int = 3
    """Re-plans at most when the measured speedup is confidently off target (short, or overshooting), or
    the plan lost more than ``max_loss``."""
    recover_seconds: float = 0.0
    """Recovery (distillation from the dense model) time budget, s; 0 with no ``recover_tokens``: off."""
    recover_tokens: int | None = None
    """Recovery budget in training tokens (None: only ``recover_seconds``)."""
    recover_lr: float | None = None
    """Recovery's peak learning rate (AdamW, warm-up then cosine decay); None: ``RECOVER_LR`` (or
    ``RECOVER_LORA_LR`` with ``recover_lora``) for the task's metric."""
    recover_lora: int = 0
    """0: recovery fine-tunes every weight; r > 0: only rank-r LoRA adapters (peft), merged after."""
    max_loss: str | None = None
    """The most quality a plan may lose: "1pt" (accuracy points) or "20%" (perplexity increase); None:
    the guard (5 points / +50%) only flags a run that lost more (``planner.config.quality``)."""
    seed: int = 0
    cache_dir: Path = field(default_factory=lambda: DEFAULT_CACHE)

    def __post_init__(self) -> None:
        validate("model", self.model, MODEL_SPEC)
        validate("data", self.data, DATA_SPEC)
        for name in ("task", "runtime", "device", "backend", "solver"):
            validate(name, getattr(self, name), one_of(_names(name)))
        from profilers.runtimes import canonical_dtype

        try:
            object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        except ValueError:
            validate("dtype", self.dtype, one_of(_names("dtype")))
        validate("phase", self.phase, one_of(PHASES))
        validate("execution", self.execution, one_of(EXECUTION_CHOICES))
        self._check_execution()
        self._check_llama_cpp()
        validate("search", self.search, one_of(SEARCHES))
        validate("search_objective", self.search_objective, one_of(SEARCH_OBJECTIVES))
        validate("executor", self.executor, one_of(EXECUTORS))
        self._check_executor()
        validate("smoothing", self.smoothing, one_of(SMOOTHING))
        validate("speedup", self.speedup, SPEEDUP)
        for name in ("batch_size", "seq_len", "rounds", "verify_rounds"):
            validate(name, getattr(self, name), POSITIVE_INT)
        for name in (
            "calibration_size",
            "test_size",
            "guard_size",
            "search_examples",
            "search_evaluations",
            "search_batch",
        ):
            validate(name, getattr(self, name), OPTIONAL_POSITIVE_INT)
        for name in ("generate", "threads", "warmup", "corrections"):
            validate(name, getattr(self, name), NON_NEGATIVE_INT)
        for name in ("ffn_step", "sparsity_levels"):
            validate(name, getattr(self, name), OPTIONAL_POSITIVE_INT)
        validate("search_seconds", self.search_seconds, NON_NEGATIVE)
        validate("recover_seconds", self.recover_seconds, NON_NEGATIVE)
        validate("recover_tokens", self.recover_tokens, OPTIONAL_POSITIVE_INT)
        validate("recover_lora", self.recover_lora, NON_NEGATIVE_INT)
        validate(
            "recover_lr", self.recover_lr, Interval(integer=False, low=0.0, open_low=True, high=1.0, allow_none=True)
        )
        validate("stability", self.stability, Interval(integer=False, low=0.0, open_low=True))
        validate(
            "profile_seconds", self.profile_seconds, Interval(integer=False, low=0.0, open_low=True, allow_none=True)
        )
        validate("max_rounds", self.max_rounds, Interval(integer=True, low=self.rounds, allow_none=True))
        validate("seed", self.seed, Interval(integer=True))
        self._check_phase()
        self.quality_limit()  # --max-loss: syntax, range and kind for the task, before any work
        if self.search_examples is not None and self.calibration_size is not None:
            validate("search_examples", self.search_examples, Interval(integer=True, low=1, high=self.calibration_size))
        if self.search in ("evolution", "spdy") and self.search_seconds == 0 and self.search_evaluations is None:
            raise PlannerError(
                f"--search {self.search} with --search-seconds 0 has no budget to search with; give --search-seconds "
                "(e.g. 60) or --search-evaluations, or use --search none for the plain DP plan."
            )

    def _check_executor(self) -> None:
        """--workers >= 1, only with Ray; Ray installed when asked for (before any work)."""
        import importlib.util

        validate("workers", self.workers, OPTIONAL_POSITIVE_INT)
        if self.executor == "local" and (self.workers not in (None, 1) or self.ray_address):
            what = f"--workers {self.workers}" if self.workers not in (None, 1) else "--ray-address"
            raise PlannerError(f"{what} needs --executor ray (the local executor is this one process).")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise PlannerError(
                "--executor ray needs Ray, which is not installed; install the extra: "
                "pip install 'latency-planner[ray]' (or use --executor local)."
            )

    def executor_settings(self) -> ExecutorSettings:
        """Where this run's search evaluates candidates (``planner.executors``)."""
        return ExecutorSettings(self.executor, self.workers, self.ray_address)

    def _check_execution(self) -> None:
        """CUDA graphs need torch on CUDA (before any work)."""
        if self.execution != "cuda-graphs":
            return
        if self.device != "cuda":
            raise PlannerError(
                "--execution cuda-graphs replays CUDA graphs and needs --device cuda; on the CPU use --execution "
                "eager (or leave --execution auto)."
            )
        if self.runtime != "torch":
            raise PlannerError(
                f"--execution cuda-graphs is timed with --runtime torch; {self.runtime} runs its own session. Use "
                "--runtime torch, or --execution eager with ONNX Runtime."
            )

    @property
    def metric(self) -> str:
        """The task's held-out metric, known before loading: "perplexity" (causal LM) or "accuracy"."""
        if self.task == "causal-lm":
            return "perplexity"
        if self.task == "text-classification":
            return "accuracy"
        return "perplexity" if spec_family(self.model) == "decoder" else "accuracy"

    def quality_limit(self) -> QualityLimit:
        """The quality limit of this run (``max_loss``, or the default guard)."""
        return parse_max_loss(self.max_loss, self.metric)

    @property
    def resolved_execution(self) -> str:
        """The execution mode that runs: "auto" is CUDA graphs for torch on CUDA, else eager."""
        if self.execution != "auto":
            return self.execution
        return "cuda-graphs" if (self.device == "cuda" and self.runtime == "torch") else "eager"

    def _check_phase(self) -> None:
        """Decode and reply phases need a causal LM, and are timed with PyTorch or llama.cpp (before any work)."""
        if self.phase == "prefill" and self.generate == 0:
            return
        what = f"--generate {self.generate}" if self.generate else f"--phase {self.phase}"
        if spec_family(self.model) == "encoder":
            raise PlannerError(
                f"{what} needs a causal language model (a KV cache to decode with); {self.model!r} is an encoder. "
                "Use --phase prefill, or a decoder such as --model smollm2."
            )
        if self.runtime == "llama.cpp":
            return
        if self.runtime != "torch":
            raise PlannerError(
                f"{what} is timed with --runtime torch or llama.cpp (steps with a KV cache); ONNX Runtime times the "
                "prefill graph. Use --runtime torch or llama.cpp, or --phase prefill for ONNX Runtime."
            )

    def _check_llama_cpp(self) -> None:
        """``--runtime llama.cpp``: a decoder, one sequence, on the CPU, with the binding installed."""
        if self.runtime != "llama.cpp":
            return
        if spec_family(self.model) == "encoder":
            raise PlannerError(
                f"--runtime llama.cpp runs decoder LLMs; {self.model!r} is an encoder. Use --runtime torch or "
                "onnxruntime, or a decoder such as --model smollm2."
            )
        if self.device != "cpu":
            raise PlannerError("--runtime llama.cpp times on the CPU (the binding's CPU build); use --device cpu.")
        if self.batch_size != 1:
            raise PlannerError(
                f"--runtime llama.cpp runs one sequence (--batch-size 1; got {self.batch_size}): the prompt length is "
                "--seq-len, the KV length in decode too."
            )
        from profilers.errors import ProfileError
        from profilers.runtimes.llamacpp import require_llama_cpp

        try:
            require_llama_cpp()
        except ProfileError as exc:
            raise PlannerError(str(exc)) from None

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def phase_name(self) -> str:
        """ "generate" when planning for a reply (``generate > 0``), else the phase."""
        return "generate" if self.generate > 0 else self.phase

    def measurement(self, *, rounds: int | None = None) -> Measurement:
        """Where and how to measure: the shape and phase, and the sampling (``rounds`` overrides the
        minimum rounds, e.g. with ``verify_rounds``)."""
        minimum = self.rounds if rounds is None else rounds
        cap = self.max_rounds if rounds is None else None
        return Measurement(
            runtime=self.runtime,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            threads=self.threads,
            rounds=minimum,
            warmup=self.warmup,
            phase=self.phase_name,
            generate_tokens=self.generate,
            seed=self.seed,
            max_rounds=cap,
            stability=self.stability,
            max_seconds=self.profile_seconds,
            execution=self.resolved_execution,
        )

    def grid(self) -> LevelGrid:
        return LevelGrid(self.ffn_step, self.sparsity_levels)

    def search_settings(self, *, calibration: int, default_examples: int) -> SearchSettings:
        """The search's settings once the task is known: ``calibration`` examples, of which the search
        scores ``search_examples`` (None: the task's default, at most half of them)."""
        budget = self.search_seconds > 0 or self.search_evaluations is not None
        method = DEFAULT_SEARCH if self.search == "auto" else self.search
        method = method if budget and self.solver == "dp" else "none"
        default = max(1, calibration // 2) if method == "evolution" else min(default_examples, max(1, calibration // 2))
        examples = min(self.search_examples or default, calibration)
        seconds = self.search_seconds if self.search_seconds > 0 else None
        return SearchSettings(
            method, seconds, examples, self.search_objective, self.seed, self.search_evaluations, self.search_batch
        )

    def recovery_settings(self) -> RecoverySettings | None:
        """This run's recovery settings, or None when recovery is off."""
        if self.recover_seconds == 0 and self.recover_tokens is None:
            return None
        defaults = RECOVER_LORA_LR if self.recover_lora else RECOVER_LR
        lr = self.recover_lr if self.recover_lr is not None else defaults[self.metric]
        return RecoverySettings(
            seconds=self.recover_seconds or None,
            tokens=self.recover_tokens,
            lr=lr,
            validation=RECOVER_VALIDATION[self.metric],
            seed=self.seed,
            lora_rank=self.recover_lora,
        )

    def describe(self) -> dict[str, str]:
        """Every field as text (recorded in the report)."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}
