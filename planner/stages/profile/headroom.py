"""Runtime headroom: how much faster the *dense* model runs when deployed another way, before any
pruning. On an H100 replaying MiniLM as a CUDA graph was 3.2x faster than eager at batch 32 x 128
(SmolLM2's shape at batch 1: 5.5x), more than any pruning plan gave; a user asking for 2x should
hear that first. On CUDA the alternative to eager torch is CUDA graphs (and back); on the CPU it is
llama.cpp for a Llama-family decoder at batch 1 (where installed), else ONNX Runtime's optimized graph
for torch (and torch for any other runtime).

The two runtimes are timed one after the other in this process (a runtime's rounds cannot be
interleaved with another's), whole model in a steady state, ``HEADROOM_ROUNDS`` quiet rounds each:
a coarse figure to decide what to try first, not a verified promise.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from planner.config import Measurement
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.models.phases import shape_of
from planner.records.headroom import Headroom
from profilers import ProfileError, Profiler, Workload

HEADROOM_ROUNDS = 5


def alternative_of(measurement: Measurement, loaded: LoadedModel | None = None) -> Measurement | None:
    """The other way to deploy on this device (None when there is none installed here): for a
    Llama-family decoder served one sequence at a time on the CPU, llama.cpp where it is installed."""
    if measurement.runtime == "torch" and measurement.device == "cuda":
        other = "eager" if measurement.execution == "cuda-graphs" else "cuda-graphs"
        return dataclasses.replace(measurement, execution=other)
    if measurement.runtime == "torch" and loaded is not None and _llama_cpp_runs(loaded, measurement):
        return dataclasses.replace(measurement, runtime="llama.cpp", execution="eager")
    if measurement.runtime == "torch":
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        return dataclasses.replace(measurement, runtime="onnxruntime", execution="eager")
    return dataclasses.replace(measurement, runtime="torch", execution="eager")


def _llama_cpp_runs(loaded: LoadedModel, measurement: Measurement) -> bool:
    from planner.models.gguf_writer import refusal
    from profilers.runtimes.llamacpp import llama_cpp_available

    if measurement.batch_size != 1 or measurement.generate_tokens or measurement.device != "cpu":
        return False
    model = loaded.adapter.model
    return refusal(model, source_gguf=None, tokenizer_folder=None, timing_only=True) is None and llama_cpp_available()


def _label(measurement: Measurement) -> str:
    return f"{measurement.runtime} {measurement.execution}"


def measure_headroom(loaded: LoadedModel, measurement: Measurement, *, progress: bool = False) -> Headroom | None:
    """Time the dense model as ``measurement`` says and the alternative way (see the module docstring).

    Returns None when there is no alternative here (ONNX Runtime for a decode step or a reply), or when
    the alternative cannot run this model (e.g. a graph that does not export): the headroom is
    advice, and a run never fails for it.
    """
    alternative = alternative_of(measurement, loaded)
    if alternative is None or (measurement.phase != "prefill" and alternative.runtime.startswith("onnxruntime")):
        return None  # ONNX Runtime times prefill graphs only
    timed: dict[str, float] = {}
    for label, which in (("reference", measurement), ("alternative", alternative)):
        rounds = dataclasses.replace(which, rounds=HEADROOM_ROUNDS, max_rounds=HEADROOM_ROUNDS, max_seconds=None)
        module, inputs = loaded.adapter.timed(loaded.model, shape_of(which))
        try:
            stats = Profiler(rounds.profiler_settings()).measure(
                [Workload("dense", module, inputs, steady=True)], progress=progress, description=f"headroom ({label})"
            )
        except (ProfileError, PlannerError, RuntimeError, ValueError, TypeError):
            return None
        timed[label] = stats["dense"].estimate_ms
    return Headroom(_label(measurement), _label(alternative), timed["reference"], timed["alternative"])
