"""ONNX Runtime: the module is exported to ONNX (static shapes) and timed in an InferenceSession.

onnxruntime is imported only when this runtime is used. Sessions run sequentially with
``intra_op_num_threads = threads`` and thread spinning disabled, so an idle session does not burn
the cores another workload is being timed on (otherwise interleaved timings would interfere).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from profilers.errors import ProfileError
from profilers.runtimes.base import DTYPES, cast_inputs, check_device
from profilers.timing import Runner

ONNX_OPSET = 17


def export_onnx(module: torch.nn.Module, inputs: Sequence[torch.Tensor], path: Path) -> None:
    """Export ``module(*inputs)`` to ONNX at fixed shapes (TorchScript exporter: fast for small graphs)."""
    names = [f"input_{i}" for i in range(len(inputs))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            tuple(inputs),
            str(path),
            input_names=names,
            output_names=["output"],
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ProfileError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)") from exc
    return onnxruntime


def session_options(threads: int) -> Any:
    """Session options used for every timed session (and for verification, so both match)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxRuntimeRuntime:
    """ONNX Runtime with the CPU provider, or the CUDA provider where onnxruntime-gpu has it."""

    name = "onnxruntime"
    # MiniLM on 2 CPU cores: profiling 46-52 s instead of 65 s, table error in the same class
    # (benchmarks/RESULTS.md, "ONNX Runtime without the settling call").
    settles_whole_models = False

    def version(self) -> str:
        return str(_ort().__version__)

    def check(self, device: str, dtype: str) -> None:
        ort = _ort()
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ProfileError(
                    "ONNX Runtime has no CUDAExecutionProvider here (available: "
                    f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu, or use --device cpu."
                )
            check_device(device)
        else:
            check_device(device)
            if dtype != "float32":
                raise ProfileError(
                    f"onnxruntime on CPU is profiled in float32 only; got {dtype!r}. Use --dtype float32, "
                    "or --runtime torch for reduced precision on CPU."
                )

    @contextlib.contextmanager
    def _no_global_threads(self) -> Iterator[None]:
        yield

    def threads(self, count: int) -> contextlib.AbstractContextManager[None]:
        # Threads are a per-session option here; nothing global changes.
        return self._no_global_threads()

    def prepare(
        self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], *, device: str, dtype: str, threads: int
    ) -> Runner:
        ort = _ort()
        torch_dtype = DTYPES[dtype]
        model = copy.deepcopy(module).to(dtype=torch_dtype).eval()
        args = cast_inputs(inputs, device="cpu", dtype=torch_dtype)
        with tempfile.TemporaryDirectory(prefix="planner-onnx-") as tmp:
            path = Path(tmp) / "workload.onnx"
            export_onnx(model, args, path)
            providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        # The exporter drops inputs the graph does not use (e.g. the mask of a model with no heads).
        by_name = {f"input_{i}": a.numpy() for i, a in enumerate(args)}
        feeds = {i.name: by_name[i.name] for i in session.get_inputs()}
        if device == "cuda":  # pragma: no cover - GPU
            return _cuda_runner(ort, session, feeds)
        return _cpu_runner(session, feeds)


def _cpu_runner(session: Any, feeds: dict[str, np.ndarray]) -> Runner:
    def run() -> float:
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1e3

    return run


def _cuda_runner(ort: Any, session: Any, feeds: dict[str, np.ndarray]) -> Runner:  # pragma: no cover - GPU
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")

    def run() -> float:
        binding.synchronize_inputs()
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return (time.perf_counter() - start) * 1e3

    return run
