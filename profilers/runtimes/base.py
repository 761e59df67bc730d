"""The runtime interface: how a workload (an ``nn.Module`` and its inputs) becomes a timed runner."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from profilers.errors import ProfileError
from profilers.timing import Runner

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
DEVICES = ("cpu", "cuda")
EXECUTIONS = ("eager", "cuda-graphs")
"""How a runtime runs a module: "eager" (op by op; ONNX Runtime's own session counts as eager), or
"cuda-graphs" (captured once as a CUDA graph and replayed: what GPU serving runs, with no launch
overhead; torch on CUDA only)."""


def check_execution(runtime: str, device: str, execution: str, supported: Sequence[str]) -> str:
    """Validate an execution mode for a runtime on a device; the error says the fix."""
    if execution not in EXECUTIONS:
        raise ProfileError(f"unknown execution {execution!r}; available: {', '.join(EXECUTIONS)}")
    if execution == "cuda-graphs" and device != "cuda":
        raise ProfileError(
            "--execution cuda-graphs replays CUDA graphs and needs --device cuda; on the CPU use --execution eager."
        )
    if execution not in supported:
        raise ProfileError(
            f"runtime {runtime!r} does not support --execution {execution}; use --execution "
            f"{' or '.join(supported)}, or --runtime torch for CUDA graphs."
        )
    return execution


def canonical_dtype(name: str) -> str:
    """'fp16' -> 'float16' etc.; unknown names list the supported ones."""
    key = _DTYPE_ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise ProfileError(f"unknown dtype {name!r}; available: float32 (fp32), float16 (fp16), bfloat16 (bf16)")
    return key


def check_device(device: str) -> str:
    """Validate a device name ('cpu' or 'cuda'); 'cuda' needs a visible GPU."""
    if device not in DEVICES:
        raise ProfileError(f"unknown device {device!r}; available: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            "device 'cuda' was requested but no CUDA GPU is visible to PyTorch "
            "(torch.cuda.is_available() is False); use --device cpu, or run on a machine with an NVIDIA "
            "GPU and a CUDA build of torch."
        )
    return device


def device_name(device: str) -> str:
    """Human-readable device: the GPU's name, or the CPU model and core count."""
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import os

    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def cast_inputs(inputs: Sequence[torch.Tensor], *, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Move inputs to ``device``; floating-point inputs also to ``dtype`` (token ids stay integers)."""
    return tuple(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device) for t in inputs)


class Runtime(Protocol):
    """A deployment runtime that can time a module at a fixed input shape.

    Call order: ``check(device, dtype)`` once, then within ``threads(n)``: ``prepare(...)`` for every
    workload, then call the returned runners (interleaved) and drop them.
    """

    name: str
    executions: tuple[str, ...]
    """Execution modes this runtime can time (``EXECUTIONS``)."""
    settles_whole_models: bool
    """True: time each whole-model sample right after an untimed call of the same model (see
    ``run_rounds``). PyTorch needs it (with glibc malloc, a model's first call after other models
    read 14-23 ms slow); ONNX Runtime keeps each session's memory in its own arena and does not."""

    def version(self) -> str:
        """Version string of the runtime library."""
        ...

    def check(self, device: str, dtype: str) -> None:
        """Raise ``ProfileError`` (with the fix) if this runtime cannot run on device/dtype here."""
        ...

    def threads(self, count: int) -> contextlib.AbstractContextManager[None]:
        """Context manager that applies the thread count and restores the previous setting."""
        ...

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
        """Build a runner for ``module(*inputs)`` in ``execution`` mode; the module is not modified
        (copies are made)."""
        ...


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block and restore it afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
