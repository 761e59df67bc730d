"""What running an exported GGUF in llama.cpp showed: the ``gguf_check.json`` beside ``model.gguf``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

PERPLEXITY_TOLERANCE = {"f32": 0.01, "f16": 0.02, "q8_0": 0.05}
"""Largest |llama.cpp perplexity / torch perplexity - 1| an export passes with, by weight type."""
F32_LOGIT_TOLERANCE = 0.02
"""Largest |logit difference| on the fixed prompt for an f32 export, relative to the largest |logit|
(float32 summation order differs between llama.cpp's kernels and torch's)."""
TOP1_AGREEMENT = {"f16": 0.95, "q8_0": 0.85}
"""Smallest share of positions where llama.cpp's and torch's most likely next token agree. q8_0 rounds
weights and (in llama.cpp's CPU kernels) activations to 8 bits: near-ties flip (a pruned SmolLM2 at
perplexity 159: 91.7% agreement with +1.3% perplexity)."""


@dataclass(frozen=True)
class GGUFCheck:
    """llama.cpp vs the pruned torch model on the same token ids.

    Attributes:
        weight_type: f32, f16 or q8_0.
        windows, tokens: held-out windows compared (tokens per window).
        max_abs_logit_diff: largest |logit difference| over every position of the first window.
        max_abs_logit: largest |logit| of the torch model there (the scale of the difference).
        top1_agreement: share of positions (all windows) with the same most likely next token.
        perplexity_llamacpp, perplexity_torch: over the windows' next tokens.
        blocks: blocks written (identity layers left out).
        notes: how pruned blocks were expressed (a zero head or zero FFN), one line each.
        build: llama.cpp binding version and system line.
    """

    weight_type: str
    windows: int
    tokens: int
    max_abs_logit_diff: float
    max_abs_logit: float
    top1_agreement: float
    perplexity_llamacpp: float
    perplexity_torch: float
    blocks: int
    notes: tuple[str, ...] = ()
    build: dict[str, str] = field(default_factory=dict)

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity_llamacpp / self.perplexity_torch

    def failures(self) -> list[str]:
        """Which checks failed, one line each (empty: the export passed)."""
        out: list[str] = []
        tolerance = PERPLEXITY_TOLERANCE[self.weight_type]
        if not math.isfinite(self.perplexity_ratio) or abs(self.perplexity_ratio - 1.0) > tolerance:
            out.append(
                f"perplexity {self.perplexity_llamacpp:.3f} in llama.cpp vs {self.perplexity_torch:.3f} in torch "
                f"({self.perplexity_ratio - 1:+.2%}; allowed {tolerance:.0%})"
            )
        if self.weight_type == "f32":
            allowed = F32_LOGIT_TOLERANCE * self.max_abs_logit
            if not self.max_abs_logit_diff <= allowed:
                out.append(f"max |logit difference| {self.max_abs_logit_diff:.4f} > {allowed:.4f}")
        elif not self.top1_agreement >= TOP1_AGREEMENT[self.weight_type]:
            out.append(f"top-1 agreement {self.top1_agreement:.1%} < {TOP1_AGREEMENT[self.weight_type]:.0%}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def text(self) -> str:
        """One line for the console and report.md."""
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures())
        return (
            f"llama.cpp check ({self.weight_type}, {self.windows} held-out windows x {self.tokens} tokens): "
            f"perplexity {self.perplexity_llamacpp:.3f} vs torch {self.perplexity_torch:.3f} "
            f"({self.perplexity_ratio - 1:+.2%}), top-1 agreement {self.top1_agreement:.1%}, "
            f"max |logit diff| {self.max_abs_logit_diff:.4f} (of {self.max_abs_logit:.1f}): {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["passed"] = self.passed
        data["failures"] = self.failures()
        return data
