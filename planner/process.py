"""Context managers for process-wide settings: each one restores what it changed in ``finally``.

Nothing the planner does leaves the process changed: environment variables, warning filters and
Hugging Face's logging verbosity and progress bars are set for a block and put back afterwards
(thread counts are restored by ``profilers.runtimes.torch_threads``). One exception: the C heap's
thresholds, once raised (``profilers.heap.settle_heap``), stay raised, as glibc itself leaves them
after any large free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def scoped_env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block; restore them afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def hf_quiet() -> Iterator[None]:
    """Offline Hugging Face with errors-only logging and no progress bars, for the block."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with scoped_env(HF_HUB_OFFLINE="1"):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def cli_session(*, debug: bool, progress: bool) -> Iterator[None]:
    """What the ``planner`` command changes while it runs: one-line warnings (library UserWarnings
    hidden unless ``debug``) and, with ``progress=False``, no progress bars. First of all it settles
    the C heap (``profilers.heap``), before any model is built, so that what it times reads what a
    long-running process gets."""
    from profilers.heap import settle_heap

    settle_heap()
    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        if not debug:
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.showwarning = _one_line_warning
        with scoped_env(**({} if progress else {"PLANNER_NO_PROGRESS": "1"})):
            yield
