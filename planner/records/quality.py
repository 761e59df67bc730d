"""The quality verdict of a run: speed and quality together, and the exit code that says it.

The limit itself (``QualityLimit``, ``--max-loss``) is a setting: ``planner.config.quality``.
"""

from __future__ import annotations

QUALITY_LOST_EXIT = 3
"""Exit code of ``planner run`` when the delivered model lost more quality than allowed (the guard
or ``--max-loss``): scripts can tell it from bad input (2) and from a crash (1)."""


def verdict(*, speed_met: bool, quality_met: bool) -> str:
    """The report's one-line verdict: speed and quality together (a gutted model is never "met")."""
    if speed_met and quality_met:
        return "met"
    if speed_met:
        return "speed met, quality lost"
    if quality_met:
        return "missed"
    return "missed, quality lost"
