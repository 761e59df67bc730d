"""What the planner leaves behind: files with the user's permissions, no process-wide state, and
bad names refused before any work."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from planner.cli import main
from planner.records.plan import Plan
from profilers.atomic import atomic_dir, atomic_path, atomic_write_text, current_umask
from tests.tiny_models import plan_of


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path, umask_022: None) -> None:
    assert current_umask() == 0o022
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    with atomic_dir(tmp_path / "folder") as folder:
        (folder / "inner.txt").write_text("z")
    assert _mode(tmp_path / "a.txt") == 0o644 and _mode(tmp_path / "b.bin") == 0o644
    assert _mode(tmp_path / "folder") == 0o755 and _mode(tmp_path / "folder" / "inner.txt") == 0o644
    os.umask(0o077)
    plan_path = plan_of().save(tmp_path / "private.json")
    assert _mode(plan_path) == 0o600
    assert Plan.load(plan_path).model_name == "net"


def test_a_run_folder_has_umask_permissions(workspace: Path, tmp_path: Path, umask_022: None) -> None:
    from planner.pipeline import run_pipeline
    from tests.test_pipeline import tiny_config

    out = tmp_path / "run"
    run_pipeline(tiny_config(workspace, tmp_path / "cache", search_seconds=0.0), out=out, progress=False)
    assert _mode(out) == 0o755 and _mode(out / "pruned") == 0o755
    for name in ("plan.json", "report.json", "report.md", "table.csv", "allocation.png"):
        assert _mode(out / name) == 0o644, name
    assert _mode(out / "pruned" / "model.safetensors") == 0o644
    assert _mode(out / "pruned" / "pruned_config.json") == 0o644


def test_main_leaves_the_process_as_it_found_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filters = list(warnings.filters)
    showwarning = warnings.showwarning
    environ = dict(os.environ)
    threads = torch.get_num_threads()
    code = main(
        [
            "profile",
            "--model",
            "tests.tiny_models:tiny_net",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "t.csv"),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert main(["run", "--solver", "nope", "--out", str(tmp_path / "run")]) == 2
    assert warnings.filters == filters and warnings.showwarning is showwarning
    assert dict(os.environ) == environ and torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--solver", "nope", "The 'solver' parameter must be one of dp, greedy, uniform, milp. Got 'nope' instead."),
        ("--backend", "nope", "The 'backend' parameter must be one of fisher, magnitude. Got 'nope' instead."),
        (
            "--runtime",
            "nope",
            "The 'runtime' parameter must be one of torch, onnxruntime, onnxruntime-plain, llama.cpp. Got 'nope' "
            "instead.",
        ),
        ("--dtype", "nope", "The 'dtype' parameter must be one of float32, float16, bfloat16. Got 'nope' instead."),
    ],
)
def test_bad_names_exit_2_before_any_work(tmp_path: Path, flag: str, value: str, message: str) -> None:
    cache = tmp_path / "cache"
    env = dict(os.environ, PLANNER_CACHE=str(cache))
    result = subprocess.run(
        [sys.executable, "-m", "planner.cli", "run", flag, value, "--out", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists() and not cache.exists()  # nothing profiled, nothing written
