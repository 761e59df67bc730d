"""The table cache never trusts silently: noisy tables are measured again, clean ones re-validated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from planner.config import RunConfig
from planner.models import load_model
from planner.stages.profile.cache import cached_table, revalidate, table_path
from profilers import LatencyTable

BERT = "tests.tiny_models:tiny_bert_factory"


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = RunConfig(model=BERT, batch_size=2, seq_len=8, rounds=3, threads=1, stability=10.0)
    loaded = load_model(BERT, batch_size=2, seq_len=8)
    measurement = config.measurement()
    first = cached_table(loaded, measurement, smoothing="none", cache_dir=tmp_path, progress=False)
    return loaded, measurement, first, table_path(tmp_path, loaded, measurement, "none")


def _rewrite(path: Path, **meta: object) -> None:
    table = LatencyTable.load(path)
    dataclasses.replace(table, meta=dataclasses.replace(table.meta, **meta)).save(path)


def test_a_clean_cached_table_is_re_validated_then_reused(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded, measurement, first, _ = setup
    assert first.status == "measured"  # (a tiny model on a shared box may read as noisy: not asserted)
    assert set(first.table.meta.anchor_ms) >= {"__dense_model__", "__anchor_0.5__", "__anchor_0.95__"}
    drift = revalidate(loaded, first.table, measurement)
    assert drift is None or drift >= 0.0
    _rewrite(table_path(tmp_path, loaded, measurement, "none"), noisy=False, noisy_workloads=())
    again = cached_table(loaded, measurement, smoothing="none", cache_dir=tmp_path, progress=False)
    assert again.status in ("reused", "re-measured")  # a tiny model's anchors may move on a shared box
    if again.status == "reused":
        assert again.table.meta.created == first.table.meta.created


def test_a_table_whose_anchors_moved_is_measured_again(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded, measurement, first, path = setup
    anchors = dict(first.table.meta.anchor_ms)
    anchors["__anchor_0.95__"] *= 3.0  # as if the heavily pruned model had been three times slower then
    _rewrite(path, anchor_ms=anchors, noisy=False, noisy_workloads=())
    again = cached_table(loaded, measurement, smoothing="none", cache_dir=tmp_path, progress=False)
    if again.note and "busy" in again.note:
        pytest.skip("the machine is busy now: re-validation cannot be trusted")
    assert again.status == "re-measured" and "moved by" in (again.note or "")


def test_a_noisy_cached_table_is_never_reused_silently(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded, measurement, _, path = setup
    _rewrite(path, noisy=True, noisy_workloads=("the dense model",), foreign_load=0.5)
    again = cached_table(loaded, measurement, smoothing="none", cache_dir=tmp_path, progress=False)
    assert again.status == "re-measured" and "noisy" in (again.note or "")
    _rewrite(path, noisy=True, noisy_workloads=("the dense model",), foreign_load=0.5)
    accepted = cached_table(
        loaded, measurement, smoothing="none", cache_dir=tmp_path, accept_noisy=True, progress=False
    )
    assert accepted.status == "reused (noisy)" and accepted.table.meta.noisy
    assert "NOISY" in accepted.table.summary()


def test_noise_settings_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main

    for flags, message in (
        (["--rounds", "0"], "The 'rounds' parameter must be an integer >= 1"),
        (["--stability", "0"], "The 'stability' parameter must be a number > 0"),
        (["--profile-seconds", "-1"], "The 'profile_seconds' parameter must be a number > 0"),
        (["--max-rounds", "2"], "The 'max_rounds' parameter must be an integer >= 10"),
    ):
        assert main(["profile", *flags, "--out", str(tmp_path / "t.csv")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_the_noisy_table_warning_names_the_cause(setup) -> None:  # type: ignore[no-untyped-def]
    from planner.pipeline import noisy_table_warning

    _, _, first, _ = setup
    table = first.table
    noisy = ("the dense model", "bert-ffn level 3 (shrunk)")
    busy = dataclasses.replace(
        table, meta=dataclasses.replace(table.meta, noisy=True, noisy_workloads=noisy, foreign_load=0.5)
    )
    message = noisy_table_warning(busy)
    assert "busy machine (other processes used 50% of the CPU)" in message and "2 measurements" in message
    assert "--accept-noisy" in message and "the dense model" in message
    jittery = dataclasses.replace(busy, meta=dataclasses.replace(busy.meta, foreign_load=0.01))
    assert "busy machine" not in noisy_table_warning(jittery)
    assert "other processes used only 1% of the CPU" in noisy_table_warning(jittery)
