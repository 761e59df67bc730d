"""How busy the machine was with other work while we measured ("foreign load").

Under a persistent load every sample is slow alike (with a hog on one of two cores, the min and p10
of a MiniLM forward moved by +95-100%, see benchmarks/RESULTS.md): no spread statistic can see it.
What can is the CPU time other processes used: the machine's busy time (``/proc/stat``) minus this
process's own (``os.times``), over the wall time and the CPUs ``/proc/stat`` counts. 0 on a quiet
machine; 0.5 with one of two cores kept busy by someone else.
"""

from __future__ import annotations

import os
import time


def _machine_busy() -> tuple[float, float] | None:
    """(busy CPU-seconds, total CPU-seconds) of the whole machine so far, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _own_cpu() -> float:
    t = os.times()
    return float(t.user + t.system + t.children_user + t.children_system)


class LoadMeter:
    """Call ``start()``, do the work, then ``foreign()``: the share of the machine's CPU time other
    processes used in between, in [0, 1], or None where the OS does not tell."""

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None
        self._own = 0.0
        self._wall = 0.0

    def start(self) -> LoadMeter:
        self._start = _machine_busy()
        self._own = _own_cpu()
        self._wall = time.perf_counter()
        return self

    def foreign(self) -> float | None:
        end = _machine_busy()
        if self._start is None or end is None:
            return None
        busy = end[0] - self._start[0]
        total = end[1] - self._start[1]
        own = _own_cpu() - self._own
        if total <= 0:
            return None
        return float(min(1.0, max(0.0, (busy - own) / total)))
