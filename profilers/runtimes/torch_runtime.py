"""PyTorch eager: CPU timed with a host clock; CUDA timed with events after synchronising."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence

import torch

from profilers.errors import ProfileError
from profilers.runtimes.base import DTYPES, cast_inputs, check_device, torch_threads
from profilers.timing import Runner


class TorchRuntime:
    """Eager PyTorch on CPU or CUDA, in float32, float16 or bfloat16."""

    name = "torch"
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
        self, module: torch.nn.Module, inputs: Sequence[torch.Tensor], *, device: str, dtype: str, threads: int
    ) -> Runner:
        torch_dtype = DTYPES[dtype]
        model = copy.deepcopy(module).to(device=device, dtype=torch_dtype).eval()
        args = cast_inputs(inputs, device=device, dtype=torch_dtype)
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
