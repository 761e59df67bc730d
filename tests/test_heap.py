"""``profilers.heap``: the C heap is settled before timing, as a long-running process has it."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from profilers import Profiler, Workload
from profilers.heap import AS_FOUND, SETTLED, settle_heap
from tests.test_profiler import settings

GLIBC = platform.libc_ver()[0] == "glibc"

_CHURN = textwrap.dedent(
    """
    import ctypes, resource, sys
    from profilers.heap import _glibc, settle_heap
    libc = _glibc()
    if sys.argv[1] == "settle":
        assert settle_heap()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(50):  # a decode step's pattern: 30 blocks of ~400 KiB written, then all freed
        blocks = [libc.malloc(400_000 + 64 * step) for _ in range(30)]
        for block in blocks:
            ctypes.memset(block, 1, 400_000)
        for block in blocks:
            libc.free(block)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> int:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], check=True, capture_output=True, text=True, cwd=root)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the heap is settled on glibc only")
def test_a_settled_heap_stops_paging_blocks_in_again_on_every_step() -> None:
    """A fresh process hands ~12 MiB back to the kernel after every step and faults it in again on the
    next (~100 faults per block); a settled one recycles the blocks in its heap."""
    fresh, settled = _page_faults("fresh"), _page_faults("settle")
    assert fresh > 50 * 30 * 50  # most blocks faulted in page by page, step after step
    assert settled < fresh / 5


@pytest.mark.skipif(not GLIBC, reason="the heap is settled on glibc only")
def test_the_profiler_times_on_a_settled_heap_and_says_so() -> None:
    assert settle_heap() and settle_heap()  # idempotent
    work = [Workload("linear", torch.nn.Linear(8, 8), (torch.zeros(2, 8),))]
    assert Profiler(settings(rounds=1)).measure(work, progress=False).heap == SETTLED


def test_elsewhere_the_heap_is_left_as_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import profilers.heap as heap

    monkeypatch.setattr(heap, "_glibc", lambda: None)
    monkeypatch.setattr(heap, "_settled", False)
    assert not heap.settle_heap()
    work = [Workload("linear", torch.nn.Linear(8, 8), (torch.zeros(2, 8),))]
    assert Profiler(settings(rounds=1)).measure(work, progress=False).heap == AS_FOUND


def test_the_planner_command_settles_the_heap_as_it_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import profilers.heap as heap
    from planner.cli import main

    calls: list[str] = []
    monkeypatch.setattr(heap, "settle_heap", lambda: bool(calls.append("settled")) or True)
    assert main(["report", str(tmp_path / "no-such-run")]) == 2  # settled even where the command fails
    assert calls == ["settled"]
