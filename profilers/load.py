"""How busy the machine was with other work while we measured ("foreign load").

Under a persistent load every sample is slow alike (with a hog on one of two cores, the min and p10
of a MiniLM forward moved by +95-100%, see benchmarks/RESULTS.md): no spread statistic can see it.
What can is the CPU time other processes used: the machine's busy time (``/proc/stat``) minus this
process's own (``os.times``) and its live descendants' (``/proc/<pid>/stat``: a local Ray cluster's
raylet and actors, started by the run, are the run's own work, not foreign load), over the wall
time and the CPUs ``/proc/stat`` counts. 0 on a quiet machine; 0.5 with one of two cores kept busy
by someone else.
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


def _descendants_cpu(root: int) -> float:
    """CPU seconds used so far by the live descendants of process ``root`` (0 off Linux)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ..., utime, stime
        if len(fields) < 13:
            continue
        parent[int(name)] = int(fields[1])
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _own_cpu() -> float:
    """This process's CPU seconds, its reaped children's and its live descendants'."""
    t = os.times()
    return float(t.user + t.system + t.children_user + t.children_system) + _descendants_cpu(os.getpid())


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
