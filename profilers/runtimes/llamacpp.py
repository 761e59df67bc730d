"""llama.cpp through its Python binding (``llama-cpp-python``): load a GGUF, evaluate token ids, time
a prefill or decode step; and ``LlamaCppRuntime``, the ``llama.cpp`` runtime of latency tables.

The binding is an optional extra (``latency-planner[llamacpp]``: pip builds llama.cpp from source with
CMake and a C++ compiler). ``require_llama_cpp`` turns its absence into one line naming the extra.

A runtime is handed PyTorch workloads; llama.cpp runs GGUF files. Whoever owns the model classes
registers a converter (``register_converter``): workload -> ``LlamaCppWorkload`` (a GGUF written for
it, how many tokens one call evaluates and how many sit in the KV cache before it). A unit's
workload also names a baseline GGUF (the same timing model without the unit): each sample is the
unit model's time minus the baseline's, timed back to back, so the fixed cost of a one-unit model
(llama.cpp's per-call overhead, embeddings, output) does not enter the unit's row.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from profilers.errors import ProfileError
from profilers.timing import Runner

EXTRA = "latency-planner[llamacpp]"
INSTALL = (
    f"pip install '{EXTRA}' (builds llama.cpp from source: needs CMake and a C++ compiler; "
    "`make test` installs it into .venv)"
)
GGML_TYPE_F32 = 0


def require_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a ``ProfileError`` naming the extra and how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise ProfileError(f"llama.cpp is not installed in this environment; {INSTALL}.") from None
    import logging

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its load warnings go to stderr otherwise
    return llama_cpp


def llama_cpp_available() -> bool:
    """Whether the binding imports (tests and the headroom line use it to decide, not to fail)."""
    try:
        require_llama_cpp()
    except ProfileError:
        return False
    return True


def build_info() -> dict[str, str]:
    """The binding's version and llama.cpp's system line (SIMD flags, backends), for provenance."""
    llama_cpp = require_llama_cpp()
    system = llama_cpp.llama_print_system_info()
    return {
        "llama_cpp_python": str(getattr(llama_cpp, "__version__", "?")),
        "system": system.decode() if isinstance(system, bytes) else str(system),
    }


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp prints its load log on file descriptor 2 even with ``verbose=False`` in some builds."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class LlamaCppModel:
    """One GGUF loaded in llama.cpp with a context of ``n_ctx`` tokens.

    Args:
        exact: keep the KV cache in float32 (the numerical checks); timing uses llama.cpp's defaults, as
            deployed.
    """

    path: Path
    n_ctx: int
    threads: int
    exact: bool = False
    logits_all: bool = True
    handle: Any = None

    def __post_init__(self) -> None:
        llama_cpp = require_llama_cpp()
        options: dict[str, Any] = dict(
            model_path=str(self.path),
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            n_ubatch=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=self.logits_all,
            verbose=False,
        )
        if self.exact:
            options.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
        try:
            with _quiet_stderr():
                self.handle = llama_cpp.Llama(**options)
        except (ValueError, RuntimeError) as exc:
            raise ProfileError(
                f"llama.cpp refused {self.path} ({exc}); the file is not a GGUF this llama.cpp build can load: "
                "re-export it with `planner apply --gguf`, or update llama-cpp-python."
            ) from None

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), vocab) float32 logits of every position, from an empty KV cache."""
        self.handle.reset()
        self.handle.eval(list(int(i) for i in ids))
        return np.array(self.handle.scores[: len(ids)], dtype=np.float32)

    def time_step(self, ids: Sequence[int], *, cached: int = 0) -> float:
        """Seconds to run ``ids`` with the first ``cached`` tokens of the last ``fill`` in the KV cache
        (0: a prefill from an empty cache; the KV entries past ``cached`` are dropped first)."""
        tokens = list(int(i) for i in ids)
        self.handle.n_tokens = cached
        start = time.perf_counter()
        self.handle.eval(tokens)
        return time.perf_counter() - start

    def reply(self, ids: Sequence[int], tokens: int) -> list[int]:
        """The greedy reply of ``tokens`` new token ids to the prompt ``ids``, from an empty KV cache: the
        prompt in one call, then one call per token, each fed the argmax of the last logits (fixed
        length, no early stop: ``GenerateLoop``'s reply as llama.cpp runs it)."""
        llama_cpp = require_llama_cpp()
        vocab = int(self.handle.n_vocab())
        self.handle.reset()
        self.handle.eval(list(int(i) for i in ids))
        new: list[int] = []
        for _ in range(tokens):
            last = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.handle.ctx, -1), shape=(vocab,))
            new.append(int(last.argmax()))
            self.handle.eval(new[-1:])
        return new

    def time_reply(self, ids: Sequence[int], tokens: int) -> float:
        """Seconds ``reply`` takes."""
        start = time.perf_counter()
        self.reply(ids, tokens)
        return time.perf_counter() - start

    def fill(self, ids: Sequence[int]) -> None:
        """Put ``ids`` in the KV cache (untimed): the context a decode step reads."""
        self.handle.reset()
        self.handle.eval(list(int(i) for i in ids))

    def close(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.handle.close()
            self.handle = None


# ----- the runtime -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LlamaCppWorkload:
    """A workload as llama.cpp runs it.

    Attributes:
        path: the GGUF written for it.
        tokens: tokens one call evaluates (the prompt for prefill, 1 for a decode step).
        cached: tokens in the KV cache before the call (decode).
        reply: tokens generated after the prompt, one call each (``--generate``; 0: one call).
        vocab: token ids the file accepts (random ids are drawn below it).
        baseline: the GGUF whose time is subtracted from every sample (a unit's fixed part), or None.
    """

    path: Path
    tokens: int
    cached: int
    vocab: int
    baseline: Path | None = None
    reply: int = 0


Converter = Callable[[torch.nn.Module, Sequence[torch.Tensor], Path, str], "LlamaCppWorkload | None"]
"""(workload module, its inputs, a folder for its files, weight type) -> the llama.cpp workload, or None
when the converter does not know the module."""
_CONVERTERS: list[Converter] = []
WEIGHT_TYPES = {"float32": "f32", "float16": "f16"}


def register_converter(converter: Converter) -> None:
    """Teach the llama.cpp runtime a family of workloads (called once, by the module that owns them)."""
    if converter not in _CONVERTERS:
        _CONVERTERS.append(converter)


class LlamaCppRuntime:
    """``--runtime llama.cpp``: decoder workloads written as GGUF and timed in llama.cpp (CPU), one
    sequence (batch 1), at the thread count given, with llama.cpp's default f16 KV cache, as deployed."""

    name = "llama.cpp"
    executions = ("eager",)
    settles_whole_models = False
    """Each llama.cpp context keeps its own buffers: no allocator churn between models."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="planner-llamacpp-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._count = 0
        self._baselines: dict[tuple[Path, int, int], LlamaCppModel] = {}

    def version(self) -> str:
        info = build_info()
        return f"llama-cpp-python {info['llama_cpp_python']}"

    def check(self, device: str, dtype: str) -> None:
        require_llama_cpp()
        if device != "cpu":
            raise ProfileError(
                "--runtime llama.cpp times on the CPU (this binding is the CPU build); use --device cpu, or "
                "--runtime torch on CUDA."
            )
        if dtype not in WEIGHT_TYPES:
            raise ProfileError(f"--runtime llama.cpp times float32 or float16 weights; got --dtype {dtype}.")

    def threads(self, count: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # llama.cpp takes its thread count per context (prepare)

    def prepare(
        self,
        module: torch.nn.Module,
        inputs: Sequence[torch.Tensor],
        *,
        device: str,
        dtype: str,
        threads: int,
        execution: str = "eager",
    ) -> Runner:
        if inputs and inputs[0].shape[0] != 1:
            raise ProfileError(
                f"llama.cpp runs one sequence at a time; use --batch-size 1 (got {inputs[0].shape[0]}); the prompt "
                "length is --seq-len."
            )
        self._count += 1
        folder = self._folder / f"w{self._count}"
        folder.mkdir()
        workload = None
        for converter in _CONVERTERS:
            workload = converter(module, inputs, folder, WEIGHT_TYPES[dtype])
            if workload is not None:
                break
        if workload is None:
            raise ProfileError(
                f"--runtime llama.cpp times Llama-family decoders; it cannot run a {type(module).__name__} "
                "workload. Use --runtime torch or onnxruntime for this model."
            )
        return self._runner(workload, threads)

    def _runner(self, workload: LlamaCppWorkload, threads: int) -> Runner:
        model = self._open(workload.path, workload, threads)
        baseline = None
        if workload.baseline is not None:
            key = (workload.baseline, workload.tokens, workload.cached)
            if key not in self._baselines:
                self._baselines[key] = self._open(workload.baseline, workload, threads)
            baseline = self._baselines[key]
        ids = np.random.default_rng(5).integers(0, workload.vocab, workload.tokens).tolist()

        def run() -> float:
            if workload.reply:
                return model.time_reply(ids, workload.reply) * 1e3
            elapsed = model.time_step(ids, cached=workload.cached)
            if baseline is not None:  # a difference: an emptied unit's noise around 0 is clipped there
                elapsed = max(0.0, elapsed - baseline.time_step(ids, cached=workload.cached))
            return elapsed * 1e3

        return run

    @staticmethod
    def _open(path: Path, workload: LlamaCppWorkload, threads: int) -> LlamaCppModel:
        n_ctx = workload.cached + workload.tokens + workload.reply + 1
        model = LlamaCppModel(path, n_ctx=n_ctx, threads=threads, logits_all=False)
        if workload.cached:
            model.fill(np.random.default_rng(6).integers(0, workload.vocab, workload.cached).tolist())
        return model
