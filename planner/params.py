"""Parameter constraints, declared once and checked before any work, with one message template:

    The 'solver' parameter must be one of dp, greedy, uniform, milp. Got 'nope' instead.

(after scikit-learn's ``_param_validation``). ``validate(name, value, constraint)`` raises
``PlannerError`` with that wording; configs call it for every field in ``__post_init__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from planner.errors import PlannerError


class Constraint(Protocol):
    """A rule a parameter value must satisfy; ``description`` completes "must be ..."."""

    @property
    def description(self) -> str: ...

    def accepts(self, value: Any) -> bool: ...


@dataclass(frozen=True)
class OneOf:
    """The value is one of ``options`` (strings)."""

    options: tuple[str, ...]

    @property
    def description(self) -> str:
        return f"one of {', '.join(self.options)}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options


@dataclass(frozen=True)
class Interval:
    """An int (``integer=True``) or real number within [low, high] (``open_low``: > low)."""

    integer: bool
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    allow_none: bool = False

    @property
    def description(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        text = f"{kind} {' and '.join(parts)}".strip()
        return f"{text} (or None)" if self.allow_none else text

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and value > self.high)


@dataclass(frozen=True)
class Satisfies:
    """The value passes ``check`` (a named rule, e.g. a model spec's syntax)."""

    description: str
    check: Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError, OSError):
            return False


def validate(name: str, value: Any, constraint: Constraint) -> None:
    """Raise ``PlannerError`` ("The 'name' parameter must be ... Got ... instead.") unless accepted."""
    if not constraint.accepts(value):
        raise PlannerError(f"The {name!r} parameter must be {constraint.description}. Got {value!r} instead.")


def one_of(options: Sequence[str]) -> OneOf:
    return OneOf(tuple(options))


POSITIVE_INT = Interval(integer=True, low=1)
NON_NEGATIVE_INT = Interval(integer=True, low=0)
OPTIONAL_POSITIVE_INT = Interval(integer=True, low=1, allow_none=True)
SPEEDUP = Interval(integer=False, low=1.0, open_low=True)
NON_NEGATIVE = Interval(integer=False, low=0.0)
