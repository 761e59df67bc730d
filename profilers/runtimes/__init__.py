"""Runtimes by name: ``torch`` (eager, or CUDA graphs on CUDA), ``onnxruntime`` (the transformer-optimized graph, as
deployed) and ``onnxruntime-plain`` (the plain export)."""

from __future__ import annotations

from profilers.errors import ProfileError
from profilers.runtimes.base import (
    DEVICES,
    DTYPES,
    EXECUTIONS,
    Runtime,
    canonical_dtype,
    check_device,
    check_execution,
    device_name,
)
from profilers.runtimes.llamacpp import LlamaCppRuntime
from profilers.runtimes.ort_runtime import OnnxRuntimeRuntime, OptimizedOnnxRuntime, export_onnx, session_options
from profilers.runtimes.torch_runtime import TorchRuntime

RUNTIMES: dict[str, type] = {
    "torch": TorchRuntime,
    "onnxruntime": OptimizedOnnxRuntime,
    "onnxruntime-plain": OnnxRuntimeRuntime,
    "llama.cpp": LlamaCppRuntime,
}


def get_runtime(name: str) -> Runtime:
    """A fresh runtime by name; unknown names list the available ones."""
    try:
        runtime: Runtime = RUNTIMES[name]()
    except KeyError:
        raise ProfileError(f"unknown runtime {name!r}; available: {', '.join(RUNTIMES)}") from None
    return runtime


__all__ = [
    "DEVICES",
    "DTYPES",
    "EXECUTIONS",
    "RUNTIMES",
    "OnnxRuntimeRuntime",
    "OptimizedOnnxRuntime",
    "Runtime",
    "TorchRuntime",
    "canonical_dtype",
    "check_device",
    "check_execution",
    "device_name",
    "export_onnx",
    "get_runtime",
    "session_options",
]
