"""PyTorch: eager on CPU (host clock) or CUDA (events after synchronising), or CUDA graphs (each
module captured once and replayed per call, timed with events)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence

import torch

from profilers.errors import ProfileError
from profilers.runtimes.base import DTYPES, EXECUTIONS, cast_inputs, check_device, check_execution, torch_threads
from profilers.timing import Runner


class TorchRuntime:
    """PyTorch on CPU or CUDA, in float32, float16 or bfloat16; eager, or CUDA graphs on CUDA."""

    name = "torch"
    executions = EXECUTIONS
    settles_whole_models = True

    def version(self) -> str:
        return str(torch.__version__)

    def check(self, device: str, dtype: str) -> None:
        check_device(device)
        if dtype not in DTYPES:
            raise ProfileError(f"unknown dtype {dtype!r}; available: {', '.join(DTYPES)}")

    def threads(self, count: int) -> contextlib.AbstractContextManager[None]:
        return torch_threads(count)

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
        torch_dtype = DTYPES[dtype]
        model = copy.deepcopy(module).to(device=device, dtype=torch_dtype).eval()
        args = cast_inputs(inputs, device=device, dtype=torch_dtype)
        if execution == "cuda-graphs":
            return _cuda_graph_runner(model, args)
        if device == "cuda":
            return _cuda_runner(model, args)
        return _cpu_runner(model, args)


def _cpu_runner(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Runner:
    def run() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            model(*args)
            return (time.perf_counter() - start) * 1e3

    return run


def _cuda_runner(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Runner:  # pragma: no cover - GPU
    start_event = torch.cuda.Event(enable_timing=True)
    end_event = torch.cuda.Event(enable_timing=True)

    def run() -> float:
        with torch.inference_mode():
            torch.cuda.synchronize()
            start_event.record()
            model(*args)
            end_event.record()
            end_event.synchronize()
            return float(start_event.elapsed_time(end_event))

    return run


GRAPH_WARMUP_CALLS = 3
"""Eager calls on a side stream before capture (lazy initialisation, cuBLAS workspaces, autotuning)."""


class GraphRunner:
    """Replays one captured CUDA graph per call and returns its latency (ms, CUDA events).

    It holds the module, its static inputs and outputs and the graph together: a graph replays
    whatever memory it captured, and a module garbage-collected while its graph lives makes the next
    replay read freed memory ("an illegal memory access"). Inputs are static buffers; the timed
    computation never changes them, so no copy into them is needed between replays.
    """

    def __init__(self, model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:  # pragma: no cover - GPU
        self.model, self.args = model, args
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP_CALLS):
                    model(*args)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.output = model(*args)
            except RuntimeError as exc:
                raise ProfileError(
                    f"{type(model).__name__} cannot be captured as a CUDA graph ({str(exc).splitlines()[0]}): "
                    "a data-dependent branch or a host synchronisation inside it. Time it with --execution eager "
                    "(and deploy it eagerly)."
                ) from None
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self) -> float:  # pragma: no cover - GPU
        torch.cuda.synchronize()
        self.start.record()
        self.graph.replay()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def _cuda_graph_runner(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Runner:  # pragma: no cover - GPU
    return GraphRunner(model, args)
