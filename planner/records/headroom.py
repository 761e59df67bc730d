"""``Headroom``: how much faster the dense model runs when deployed another way (the record of the
profile stage's headroom measurement, ``planner.stages.profile.headroom``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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
