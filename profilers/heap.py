"""Put glibc's heap in the state a long-running process reaches, before anything is timed.

glibc's malloc serves blocks above its mmap threshold (128 KiB in a fresh process) with ``mmap`` and
returns them with ``munmap``, so every such block's pages fault in again on its next use. When the
process frees one such block the threshold rises to that block's size (at most 32 MiB on 64-bit
glibc) and the heap's trim threshold to twice that; from then on those blocks are recycled inside
the heap. A process that has run for a while (a server, a sweep after its pruning) has freed some
large block long ago, so it runs in the raised state; a fresh profiling process has not. On the
project's CPU box a SmolLM2 decode step at a 512-token KV cache read 70.8 ms in a fresh process
and 59.0 ms in a settled one, and shrunk models' speedups read 11% higher in the fresh one
(``benchmarks/heap_drift.py``): tables promised speed a warm process does not get.

``settle_heap`` mallocs and frees one block just below the 32 MiB cap, which raises the thresholds as
a long-running process's history does. It keeps glibc's own rule (the thresholds stay dynamic) and
holds no memory. Elsewhere (not glibc; macOS, Windows, musl) it does nothing and says so.

Call it before the models are built: raised after the weights were allocated, the same decode step
read 65.9 ms, against 71.4 ms fresh and 60.1 ms settled first (``benchmarks/RESULTS.md``, nineteenth
session; why a late settle helps so little is inferred, not traced). The ``planner`` command settles
the heap as it starts (``planner.process.cli_session``); ``Profiler.measure`` settles it too, for
library callers, from then on. The change lasts for the process, as the same free in glibc's own
course would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

SETTLED = "settled"
"""The heap's thresholds were raised before timing (glibc)."""
AS_FOUND = "as found"
"""Timed on the heap as the process had it (not glibc; or a table from before schema 9)."""
HEAP_STATES = (SETTLED, AS_FOUND)

SETTLING_BYTES = 31 * 1024 * 1024
"""Size of the block malloc'd and freed: above the fresh 128 KiB threshold, below glibc's 32 MiB cap
(``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit), so its free raises the mmap threshold to about 31 MiB."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (it exports ``gnu_get_libc_version``); None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.restype = None
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


_settled = False


def settle_heap() -> bool:
    """Raise glibc's mmap and trim thresholds as a long-running process has them; True if done.

    Cheap (one 31 MiB mmap and munmap; its pages are never touched) and done once per process: later
    calls return True at once. Returns False where the C library is not glibc, or the block could not
    be allocated: timing then runs on the heap as it is.
    """
    global _settled
    if _settled:
        return True
    libc = _glibc()
    if libc is None:
        return False
    block = libc.malloc(SETTLING_BYTES)
    if not block:
        return False
    libc.free(block)
    _settled = True
    return True


def heap_state() -> str:
    """``SETTLED`` once ``settle_heap`` has succeeded in this process, else ``AS_FOUND``."""
    return SETTLED if _settled else AS_FOUND
