"""Runtime headroom: how much faster the *dense* model runs when deployed another way, before any
pruning. On an H100 replaying MiniLM as a CUDA graph was 3.2x faster than eager at batch 32 x 128
(SmolLM2's shape at batch 1: 5.5x), more than any pruning plan gave; a user asking for 2x should
hear that first. On CUDA the alternative to eager torch is CUDA graphs (and back); on the CPU it is
ONNX Runtime's optimized graph for torch (and torch for ONNX Runtime).

The two runtimes are timed one after the other in this process (a runtime's rounds cannot be
interleaved with another's), whole model in a steady state, ``HEADROOM_ROUNDS`` quiet rounds each:
a coarse figure to decide what to try first, not a verified promise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from planner.config import Measurement
from planner.errors import PlannerError
from planner.models import LoadedModel
from planner.profile import profiler_settings, shape_of
from profilers import ProfileError, Profiler, Workload

HEADROOM_ROUNDS = 5


@dataclass(frozen=True)
class Headroom:
    """The dense model timed as planned (``reference``) and as deployed another way (``alternative``).

    Attributes:
        reference, alternative: "<runtime> <execution>", e.g. "torch eager", "torch cuda-graphs".
        reference_ms, alternative_ms: p10 latencies of the dense model (ms).
    """

    reference: str
    alternative: str
    reference_ms: float
    alternative_ms: float

    @property
    def speedup(self) -> float:
        """How much faster the alternative runs the dense model (> 1: faster)."""
        return self.reference_ms / self.alternative_ms if self.alternative_ms > 0 else float("inf")

    def text(self, target_speedup: float | None = None) -> str:
        """E.g. "torch cuda-graphs alone: 3.20x over torch eager at this shape (meets the 2x target)"."""
        line = f"{self.alternative} alone: {self.speedup:.2f}x over {self.reference} at this shape, dense"
        if target_speedup is not None and self.speedup >= target_speedup:
            line += f" (meets the {target_speedup:g}x target before any pruning)"
        return line

    def as_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "speedup": self.speedup}


def alternative_of(measurement: Measurement) -> Measurement | None:
    """The other way to deploy on this device (None when there is none installed here)."""
    if measurement.runtime == "torch" and measurement.device == "cuda":
        other = "eager" if measurement.execution == "cuda-graphs" else "cuda-graphs"
        return dataclasses.replace(measurement, execution=other)
    if measurement.runtime == "torch":
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        return dataclasses.replace(measurement, runtime="onnxruntime", execution="eager")
    return dataclasses.replace(measurement, runtime="torch", execution="eager")


def _label(measurement: Measurement) -> str:
    return f"{measurement.runtime} {measurement.execution}"


def measure_headroom(loaded: LoadedModel, measurement: Measurement, *, progress: bool = False) -> Headroom | None:
    """Time the dense model as ``measurement`` says and the alternative way (see the module docstring).

    Returns None when there is no alternative here (ONNX Runtime for a decode step or a reply), or when
    the alternative cannot run this model (e.g. a graph that does not export): the headroom is
    advice, and a run never fails for it.
    """
    alternative = alternative_of(measurement)
    if alternative is None or (measurement.phase != "prefill" and alternative.runtime != "torch"):
        return None  # ONNX Runtime times prefill graphs only
    timed: dict[str, float] = {}
    for label, which in (("reference", measurement), ("alternative", alternative)):
        rounds = dataclasses.replace(which, rounds=HEADROOM_ROUNDS, max_rounds=HEADROOM_ROUNDS, max_seconds=None)
        module, inputs = loaded.adapter.timed(loaded.model, shape_of(which))
        try:
            stats = Profiler(profiler_settings(rounds)).measure(
                [Workload("dense", module, inputs, steady=True)], progress=progress, description=f"headroom ({label})"
            )
        except (ProfileError, PlannerError, RuntimeError, ValueError, TypeError):
            return None
        timed[label] = stats["dense"].estimate_ms
    return Headroom(_label(measurement), _label(alternative), timed["reference"], timed["alternative"])
