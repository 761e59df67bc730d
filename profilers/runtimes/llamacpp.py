"""llama.cpp through its Python binding (``llama-cpp-python``): load a GGUF, evaluate token ids, time
a prefill or decode step.

The binding is an optional extra (``latency-planner[llamacpp]``: pip builds llama.cpp from source with
CMake and a C++ compiler). ``require_llama_cpp`` turns its absence into one line naming the extra.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from profilers.errors import ProfileError

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
            logits_all=True,
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

    def time_prefill(self, ids: Sequence[int]) -> float:
        """Seconds to run ``ids`` through the model from an empty KV cache (one prefill)."""
        tokens = list(int(i) for i in ids)
        self.handle.reset()
        start = time.perf_counter()
        self.handle.eval(tokens)
        return time.perf_counter() - start

    def close(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.handle.close()
            self.handle = None
