"""A bounded CPU hog: child processes that keep cores busy, to measure how timing behaves on a busy
machine (benchmarks only). Each child spins until it is stopped or its own deadline passes, so a
crash of the caller never leaves a hog behind for long."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Iterator


def _spin(deadline: float, core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})
    x = 0
    while time.time() < deadline:
        x = (x * 1103515245 + 12345) % 2147483648


@contextlib.contextmanager
def cpu_hog(*, cores: int = 1, max_seconds: float = 3600.0) -> Iterator[list[int]]:
    """Keep ``cores`` cores busy for the block (each child pinned to one core where the OS allows,
    the last cores first) and at most ``max_seconds``; yields the children's process ids."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    deadline = time.time() + max_seconds
    children = []
    for i in range(cores):
        core = available[-1 - i] if i < len(available) else None
        child = mp.get_context("spawn").Process(target=_spin, args=(deadline, core), daemon=True)
        child.start()
        children.append(child)
    try:
        yield [int(c.pid or 0) for c in children]
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
