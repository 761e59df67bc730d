"""ONNX Runtime: the module is exported to ONNX (static shapes) and timed in an InferenceSession.

Two runtimes: ``onnxruntime`` times the graph users deploy, the export passed through ONNX Runtime's
transformer optimizer (``onnxruntime.transformers.optimizer``: Attention, SkipLayerNormalization,
BiasGelu and the other fusions, wherever their patterns match the shrunk shapes; which fused ops a
workload got is recorded with it); ``onnxruntime-plain`` times the plain export (ONNX Runtime's
default graph optimizations only).

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
from profilers.runtimes.base import DTYPES, cast_inputs, check_device, check_execution
from profilers.timing import Runner

ONNX_OPSET = 17
UNOPTIMIZED = "unoptimized"
"""The fusions entry of a workload whose graph the transformer optimizer could not process (it is
timed as exported, with ONNX Runtime's default graph optimizations)."""


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


class TimedSession:
    """A runner over an ONNX Runtime session (``__call__`` times one run, ms) and the fused operators
    the transformer optimizer put in its graph (empty for plain graphs)."""

    def __init__(self, run: Runner, fusions: dict[str, int]) -> None:
        self._run = run
        self.fusions = fusions

    def __call__(self) -> float:
        return self._run()


def optimize_graph(path: Path, out: Path, *, use_gpu: bool) -> dict[str, int]:
    """Apply ONNX Runtime's transformer fusions to the model at ``path``, write ``out``; returns the
    count of each fused operator it placed (heads and hidden size detected from the graph)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0, use_gpu=use_gpu)
    model.save_model_to_file(str(out))
    stats = model.get_fused_operator_statistics()
    return {str(k): int(v) for k, v in stats.items() if int(v) > 0}


class OnnxRuntimeRuntime:
    """ONNX Runtime with the CPU provider, or the CUDA provider where onnxruntime-gpu has it
    (``optimize``: the transformer optimizer's fused graph, as deployed)."""

    name = "onnxruntime-plain"
    optimize = False
    # MiniLM on 2 CPU cores: profiling 46-52 s instead of 65 s, table error in the same class
    # (benchmarks/RESULTS.md, "ONNX Runtime without the settling call").
    settles_whole_models = False
    executions = ("eager",)
    """A session runs its own graph; CUDA-graph capture (ORT's ``enable_cuda_graph``) is not used."""

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
        self,
        module: torch.nn.Module,
        inputs: Sequence[torch.Tensor],
        *,
        device: str,
        dtype: str,
        threads: int,
        execution: str = "eager",
    ) -> Runner:
        check_execution(self.name, device, execution, self.executions)
        ort = _ort()
        torch_dtype = DTYPES[dtype]
        model = copy.deepcopy(module).to(dtype=torch_dtype).eval()
        args = cast_inputs(inputs, device="cpu", dtype=torch_dtype)
        fusions: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="planner-onnx-") as tmp:
            path = Path(tmp) / "workload.onnx"
            export_onnx(model, args, path)
            providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            session = None
            if self.optimize:
                optimized = Path(tmp) / "optimized.onnx"
                try:
                    fusions = optimize_graph(path, optimized, use_gpu=device == "cuda")
                    session = ort.InferenceSession(str(optimized), session_options(threads), providers=providers)
                except Exception:  # the optimizer's patterns do not fit every graph
                    # e.g. decoder graphs, which the BERT fusions break: time the export as it is,
                    # and say so in the table (a deployment would hit the same wall).
                    fusions = {UNOPTIMIZED: 1}
            if session is None:
                session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        # The exporter drops inputs the graph does not use (e.g. the mask of a model with no heads).
        by_name = {f"input_{i}": a.numpy() for i, a in enumerate(args)}
        feeds = {i.name: by_name[i.name] for i in session.get_inputs()}
        if device == "cuda":  # pragma: no cover - GPU
            return TimedSession(_cuda_runner(ort, session, feeds), fusions)
        return TimedSession(_cpu_runner(session, feeds), fusions)


class OptimizedOnnxRuntime(OnnxRuntimeRuntime):
    """ONNX Runtime on the graph deployments use: the transformer optimizer's fusions applied."""

    name = "onnxruntime"
    optimize = True


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
