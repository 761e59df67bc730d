"""One place for the Hugging Face APIs that changed between the transformers releases we support.

transformers 5.17 (what GPU images ship) passes a decoder's KV cache as ``past_key_values=`` and
returns it as ``output.past_key_values``; later 5.x releases renamed both to ``cache`` and warn that
the old name goes in 5.40. The supported floor is declared in ``pyproject.toml``; every call that
hands a cache to a model or block goes through here, so neither release warns nor breaks.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

CACHE_NAMES = ("cache", "past_key_values", "layer_past")
"""Keyword names a block may receive its KV cache under, newest first (GPT-2 used ``layer_past``)."""


@functools.lru_cache(maxsize=64)
def _cache_keyword_of(forward: Any) -> str:
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented callable: use the old name
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes its KV cache under: ``"cache"`` (transformers >= 5.18 or
    so) or ``"past_key_values"`` (older)."""
    return _cache_keyword_of(type(module).forward)


def with_cache(module: nn.Module, cache: Any, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` plus the cache under the keyword ``module`` expects."""
    return {**kwargs, cache_keyword(module): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a model returned (``output.cache`` or ``output.past_key_values``), or None."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def cache_argument(kwargs: dict[str, Any]) -> Any:
    """The KV cache among a block's keyword arguments, whatever the release called it, or None."""
    for name in CACHE_NAMES:
        value = kwargs.get(name)
        if value is not None:
            return value
    return None
