"""The methods practitioners use instead of a planner, as sweep baselines: depth pruning (ShortGPT's
Block Influence, whole layers skipped) and FLAP (fluctuation scores, one global threshold, bias
compensation); their refusals before any work; a decoder sweep with both."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from planner.backends import get_backend
from planner.backends.activations import block_influence
from planner.backends.depth import INFLUENCE
from planner.backends.flap import z_key
from planner.cli import main
from planner.models.decoder_surgery import AttentionlessLayer, SkippedLayer, UnusedNorm
from planner.models.units import first_kept
from planner.records.plan import UnitChoice
from planner.stages.solve import depth_levels, flap_levels, solve_plan
from planner.sweep import run_sweep
from solvers import threshold_levels
from tests.test_decoders import TINY_LM_SPEEDUP, _lm_config
from tests.tiny_models import TINY_ADAPTERS, loaded_of, plan_of, skipped_and_whole_logits, table_for, tiny_lm_task

# the tiny Qwen3 has an o_proj bias: a layer without blocks still adds it (tested below)
SKIPPABLE = sorted(name for name in TINY_ADAPTERS if name.startswith("llama") and name != "llama/qwen3")


def _emptied(adapter, layer: int):  # type: ignore[no-untyped-def]
    """Keep lists that remove layer ``layer``'s attention and MLP entirely."""
    return {u.name: first_kept(u, u.levels[-1]) for u in adapter.units() if u.layer == layer}


@pytest.mark.parametrize("family", SKIPPABLE)
def test_a_layer_without_blocks_is_skipped_whole_and_changes_nothing(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = TINY_ADAPTERS[family]()
    shrunk = adapter.shrink(_emptied(adapter, 0))
    layers = adapter.layers_of(shrunk)
    assert isinstance(layers[0], SkippedLayer) and not isinstance(layers[1], SkippedLayer)
    assert sum(p.numel() for p in layers[0].parameters()) == 0  # its norms are gone too
    ids, mask = adapter.example_inputs(2, 6)
    with torch.no_grad():
        skipped = shrunk(input_ids=ids, attention_mask=mask).logits
        monkeypatch.setattr(adapter, "skip_identity_layers", lambda _layers: None)  # same cut, layer kept
        kept = adapter.shrink(_emptied(adapter, 0))(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(skipped, kept, rtol=0, atol=0)


def _layer_1_block_emptied(family: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any, bool]:
    """(adapter, cut, shrunk model, whether its layers are plain pre-norm ones) for ``family`` with layer
    1's ``kind`` block emptied; checks first that the logits, with and without a KV cache, are the same
    bits as with the layer kept whole."""
    adapter = TINY_ADAPTERS[family]()
    cut = {u.name: first_kept(u, u.levels[-1]) for u in adapter.units() if u.layer == 1 and u.kind == kind}
    (new, step), (old, old_step) = skipped_and_whole_logits(adapter, cut, monkeypatch)
    torch.testing.assert_close(new, old, rtol=0, atol=0)
    torch.testing.assert_close(step, old_step, rtol=0, atol=0)
    monkeypatch.undo()
    plain = family != "llama/gemma3"  # Gemma 3 has norms around each block: its layers stay whole
    return adapter, cut, adapter.shrink(cut), plain


@pytest.mark.parametrize("family", SKIPPABLE)
def test_a_layer_without_attention_runs_only_its_mlp_half_and_changes_nothing(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An emptied attention (no bias) adds zeros: its layer skips the input norm and the residual add
    (Llama, Qwen2, Mistral); the logits, with and without a KV cache, are the same bits."""
    adapter, cut, shrunk, plain = _layer_1_block_emptied(family, "attention", monkeypatch)
    layers = adapter.layers_of(shrunk)
    assert isinstance(layers[1], AttentionlessLayer) == plain and not isinstance(layers[0], AttentionlessLayer)
    assert adapter.attention_heads(layers[1]) == 0
    # The same weights under the same names: the model saves and loads as before.
    assert sorted(shrunk.state_dict()) == sorted(adapter.shrink(cut).state_dict())


@pytest.mark.parametrize("family", SKIPPABLE)
def test_a_layer_without_its_mlp_skips_the_norm_before_it_and_changes_nothing(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An emptied MLP returns its bias (zeros) whatever it is given: the norm before it is not computed
    (Llama, Qwen2, Mistral); the logits, with and without a KV cache, are the same bits."""
    adapter, cut, shrunk, plain = _layer_1_block_emptied(family, "ffn", monkeypatch)
    layers = adapter.layers_of(shrunk)
    assert isinstance(layers[1].post_attention_layernorm, UnusedNorm) == plain
    assert not isinstance(layers[0].post_attention_layernorm, UnusedNorm)
    # The same weights under the same names: the model saves and loads as before.
    monkeypatch.setattr(adapter, "skip_identity_layers", lambda _layers: None)
    whole = adapter.shrink(cut).state_dict()
    assert sorted(shrunk.state_dict()) == sorted(whole)
    for name, tensor in shrunk.state_dict().items():
        torch.testing.assert_close(tensor, whole[name], rtol=0, atol=0)


def test_layers_with_output_biases_or_post_norms_are_not_skipped_and_depth_refuses_them(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from planner.backends.depth import refusal

    for family in ("gpt2", "llama/qwen3"):
        biased = TINY_ADAPTERS[family]()
        layers = biased.layers_of(biased.shrink(_emptied(biased, 0)))
        assert not any(isinstance(layer, SkippedLayer) for layer in layers)
        assert "biases" in (refusal(biased) or "")
    assert refusal(TINY_ADAPTERS["llama"]()) is None
    # BERT: refused from the CLI before any work, in one line, exit 2, nothing written
    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(workspace / "model"), "--data", str(workspace / "data"), "--methods", "depth"]
    monkeypatch.setenv("PLANNER_CACHE", str(tmp_path / "cache"))
    code = main([*args, "--speedups", "1.1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "post-norm" in err and "--methods" in err and len(err.splitlines()) == 1
    assert not out.exists() and not any((tmp_path / "cache").rglob("*.csv"))  # nothing profiled


def test_block_influence_is_zero_for_a_skipped_layer_and_positive_otherwise() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    task = tiny_lm_task(adapter)
    shrunk = adapter.shrink(_emptied(adapter, 1))
    influence = block_influence(task, shrunk, list(adapter.layers_of(shrunk)))
    # random tiny weights barely turn the residual stream (layer 0: ~5e-5), a skipped layer not at all
    assert influence.shape == (2,) and influence[1] == pytest.approx(0.0, abs=1e-12) and influence[0] > 1e-6


def test_depth_plans_remove_the_least_influential_layer_whole() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    loaded = loaded_of(adapter.model, adapter)
    table = table_for(adapter, loaded.fingerprint)
    task = tiny_lm_task(adapter)
    backend = get_backend("depth")
    scores = backend.score(adapter, task)
    influence = scores.extra[INFLUENCE]
    levels = depth_levels(loaded, table.unit_costs(), scores, table.budget_ms(1.2))
    first = int(np.argmin(influence))
    for unit, level in zip(adapter.units(), levels, strict=True):
        assert (unit.levels[level].kept == 0) == (unit.layer == first)  # one layer is enough here
    plan = solve_plan(loaded=loaded, table=table, scores=scores, backend=backend, speedup=1.2, solver="depth")
    assert plan.predicted_speedup >= 1.2 - 1e-9
    layers = adapter.layers_of(backend.apply(adapter, plan, task))
    assert [isinstance(layer, SkippedLayer) for layer in layers] == [i == first for i in range(2)]


def test_flap_scores_are_standardised_per_layer_and_its_plans_cut_at_one_threshold() -> None:
    adapter = TINY_ADAPTERS["llama"]()
    loaded = loaded_of(adapter.model, adapter)
    table = table_for(adapter, loaded.fingerprint)
    task = tiny_lm_task(adapter)
    scores = get_backend("flap").score(adapter, task)
    for unit in adapter.units():
        z = scores.extra[z_key(unit.name)]
        assert z.size == (2 if unit.kind == "attention" else unit.size)  # KV groups, or neurons
        assert z.mean() == pytest.approx(0.0, abs=1e-9) and z.std(ddof=1) == pytest.approx(1.0)
    budget = table.budget_ms(1.3)
    levels = flap_levels(loaded, table.unit_costs(), scores, budget)

    def cost(plan: list[int]) -> float:  # the searched units' time, what the budget is for (ms)
        return float(sum(c[k] for c, k in zip(table.unit_costs(), plan, strict=True)))

    assert cost(levels) <= budget + 1e-9
    # the plan of one global cut, the lowest that fits: found here by trying every cut in turn
    units = adapter.units()
    z = [scores.extra[z_key(u.name)] for u in units]
    # attention: whole KV groups of 2 query heads (a level that also drops heads inside groups keeps all 2)
    kept = [
        np.array([(lv.groups if 2 * (lv.groups or 0) == lv.kept else 2) if u.kind == "attention" else lv.kept
                  for lv in u.levels])
        for u in units
    ]  # fmt: skip
    fits = [t for t in sorted(np.concatenate(z)) if cost(threshold_levels(z, kept, t)) <= budget]
    assert levels == threshold_levels(z, kept, fits[0])
    assert any(level > 0 for level in levels)


def test_flap_bias_compensation_keeps_the_mean_output_of_a_pruned_mlp() -> None:
    """Only layer 0's MLP is cut, so its inputs are the dense model's: with compensation the mean of
    its output over the calibration tokens is the dense one's (linearity), without it is not."""
    adapter = TINY_ADAPTERS["llama"]()
    task = tiny_lm_task(adapter)
    backend = get_backend("flap")
    scores = backend.score(adapter, task)
    mlp = next(u for u in adapter.units() if u.kind == "ffn" and u.layer == 0)
    level = mlp.levels[len(mlp.levels) // 2]
    keep = first_kept(mlp, level)
    choice = UnitChoice(mlp.name, "ffn", level.index, "neurons", kept=len(keep), keep=keep, size=mlp.size, layer=0)
    plan = plan_of(choice, architecture="llama")

    def mean_output(model: torch.nn.Module) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        handle = adapter.layers_of(model)[0].mlp.register_forward_hook(lambda _m, _a, out: outputs.append(out))
        with torch.no_grad():
            for ids, mask, _ in task.calibration.batches(task.batch_size):
                model(input_ids=ids, attention_mask=mask)
        handle.remove()
        return torch.cat([o.reshape(-1, o.shape[-1]) for o in outputs]).double().mean(dim=0)

    dense = mean_output(adapter.model)
    compensated = mean_output(backend.apply(adapter, plan, task))
    plain = mean_output(adapter.shrink({mlp.name: keep}))
    torch.testing.assert_close(compensated, dense, rtol=1e-4, atol=1e-6)
    assert float((plain - dense).abs().max()) > 100 * float((compensated - dense).abs().max())
    assert scores.importance[mlp.name].shape == (mlp.size,)


def test_a_decoder_sweep_with_depth_and_flap_compares_at_equal_measured_speed(workspace: Path, tmp_path: Path) -> None:
    frame = run_sweep(
        _lm_config(workspace, tmp_path / "cache", search_seconds=1.0),
        [TINY_LM_SPEEDUP],  # inside the tiny model's reach (1.2-1.4x, measured anew each run)
        out=tmp_path / "sweep",
        methods=["spdy", "depth", "flap"],
        progress=False,
    )
    own = frame[frame["matched_to"] == ""]
    assert set(own["method"]) == {"planner (spdy)", "depth (ShortGPT)", "FLAP", "uniform (fisher)"}
    for row in frame.itertuples():  # GQA: KV groups recorded beside query heads, never more of them
        assert len(row.groups_kept) == len(row.heads_kept) == len(row.neurons_kept)
        assert all(0 <= g <= h for g, h in zip(row.groups_kept, row.heads_kept, strict=True))
    for label in ("depth (ShortGPT)", "FLAP"):
        row = own[own["method"] == label].iloc[0]
        assert row["baseline"] == "uniform (fisher)" and row["verdict"] in {"win", "tie", "loss"}
        assert row["predicted_speedup"] >= TINY_LM_SPEEDUP - 1e-9
    # the planner planned again at each baseline's measured speed where its own differs by > 3%
    matched = frame[frame["matched_to"] != ""]
    assert set(matched["method"]) <= {"planner (spdy)"}
    for row in matched.itertuples():
        base = frame[(frame["matched_to"] == "") & (frame["method"] == row.baseline)].iloc[0]
        assert row.matched_to.split("@")[0] in {"uniform", "depth", "flap"}
        assert row.vs_baseline == pytest.approx(row.metric - float(base["metric"]))
    # every peer meets the planner at equal measured speed: planned again, or its own model when close
    for label in ("depth (ShortGPT)", "FLAP"):
        assert (matched["baseline"] == label).sum() <= 2  # two only where two re-plans bracket its speed
    compared = frame[frame["verdict"] != "baseline"]
    assert set(compared["at_equal_speed"]) <= {"win", "tie", "loss", "unresolved"}
    for row in compared.itertuples():
        assert row.speed_vs_baseline == pytest.approx(row.measured_speedup / row.baseline_speedup)
    for row in compared[compared["matched_to"] == ""].itertuples():  # timed in one run with uniform
        base = own[own["method"] == row.baseline].iloc[0]
        assert row.baseline_speedup == pytest.approx(float(base["measured_speedup"]))
    for _, group in compared.groupby(["method", "baseline"]):
        if len(group) == 1 and abs(float(group["speed_vs_baseline"].iloc[0]) - 1.0) <= 0.03:
            assert group["at_equal_speed"].iloc[0] == group["verdict"].iloc[0]


def test_the_planner_meets_each_peer_at_its_measured_speed() -> None:
    """Planned again where it measured more than 3% away from a peer; its own model compared with the
    peer (no new job) where it measured within 3%; uniform's own comparison needs no second row."""
    from planner.sweep import SWEEP_METHODS, _Entry, _matched_entries

    def entry(name: str, speed: float) -> _Entry:
        return _Entry(f"{name}@2", SWEEP_METHODS[name], 2.0, object(), object(), row={"measured_speedup": speed})  # type: ignore[arg-type]

    spdy = entry("spdy", 1.90)
    entries = [spdy, entry("uniform", 1.91), entry("depth", 1.50), entry("flap", 1.93)]
    jobs: list[tuple[str, float]] = []

    def run_jobs(todo):  # type: ignore[no-untyped-def]
        jobs.extend(todo)
        return [(object(), object(), None, None) for _ in todo]

    planned, same = _matched_entries(entries, run_jobs, 3.0, lambda _line: None)
    assert jobs == [("spdy", pytest.approx(2.0 * 1.50 / 1.90))]
    assert [e.key for e in planned] == ["spdy@2=depth"] and planned[0].matched_to == "depth@2"
    assert [e.key for e in same] == ["spdy@2=flap"]
    assert same[0].model is spdy.model and same[0].row == {"measured_speedup": 1.90, "matched_to": "flap@2"}


def test_a_re_plan_that_missed_its_peer_gets_one_more_step_and_the_closer_is_kept() -> None:
    """A re-plan measured 1.42x for depth's 1.49x (planned 1.59x) is planned again at 1.59 x 1.49 / 1.42;
    one within 3% of its peer is not; of the two measured, the one closer to the peer is reported."""
    from planner.sweep import SWEEP_METHODS, _closest, _Entry, _matched_again

    class _Plan:
        def __init__(self, target: float) -> None:
            self.target_speedup = target

    def entry(key: str, speed: float, planned: float = 1.5, matched_to: str = "") -> _Entry:
        name = key.split("@")[0]
        row = {"measured_speedup": speed}
        return _Entry(key, SWEEP_METHODS[name], 1.5, _Plan(planned), object(), matched_to, row=row)  # type: ignore[arg-type]

    entries = [entry("spdy@1.5", 1.41), entry("depth@1.5", 1.49), entry("flap@1.5", 1.30)]
    missed = entry("spdy@1.5=depth", 1.42, planned=1.59, matched_to="depth@1.5")
    close = entry("spdy@1.5=flap", 1.31, planned=1.38, matched_to="flap@1.5")
    jobs: list[tuple[str, float]] = []

    def run_jobs(todo):  # type: ignore[no-untyped-def]
        jobs.extend(todo)
        return [(_Plan(speed), object(), None, None) for _, speed in todo]

    again = _matched_again([missed, close], entries, run_jobs, 3.0, lambda _line: None)
    assert jobs == [("spdy", pytest.approx(1.59 * 1.49 / 1.42))]
    assert [e.key for e in again] == ["spdy@1.5=depth"] and again[0].matched_to == "depth@1.5"
    capped = _matched_again([missed], entries, run_jobs, 1.6, lambda _line: None)
    assert capped[0].plan.target_speedup == pytest.approx(1.6) and jobs[-1] == ("spdy", 1.6)  # the table's maximum

    def closest(second: float) -> list[_Entry]:
        again[0].row = {"measured_speedup": second}
        return _closest({missed.key: [missed, again[0]], close.key: [close]}, entries)

    assert closest(1.51) == [again[0], close]
    assert closest(1.47) == [again[0], close]  # both short of the peer: the closer
    kept = closest(1.60)  # 1.42x and 1.60x bracket 1.49x, neither within 3%: both
    assert [e.key for e in kept] == ["spdy@1.5=depth", "spdy@1.5=depth~2", "spdy@1.5=flap"]
    assert kept[1].model is again[0].model and kept[1].matched_to == "depth@1.5"

    # a third step goes along the secant through the two re-plans
    first = entry("spdy@1.5=depth", 1.30, planned=1.55, matched_to="depth@1.5")
    second = entry("spdy@1.5=depth", 1.42, planned=1.70, matched_to="depth@1.5")
    third = _matched_again([second], entries, run_jobs, 3.0, lambda _line: None, previous={first.key: first})
    assert [e.key for e in third] == ["spdy@1.5=depth"]
    assert jobs[-1] == ("spdy", pytest.approx(1.70 + (1.49 - 1.42) * (1.70 - 1.55) / (1.42 - 1.30)))


def test_the_third_step_follows_the_secant_within_half_to_twice_a_proportional_step() -> None:
    from planner.sweep import next_target

    # SmolLM2 decode (2026-12-05): 1.72x planned measured 1.40x, 1.97x measured 1.54x, depth 1.60x
    assert next_target((1.97, 1.54), 1.60) == pytest.approx(1.97 * 1.60 / 1.54)
    assert next_target((1.97, 1.54), 1.60, (1.72, 1.40)) == pytest.approx(1.97 + 0.06 * 0.25 / 0.14)
    # a flat slope (noise) would ask for far more: held to twice the proportional step
    assert next_target((1.97, 1.54), 1.60, (1.72, 1.539)) == pytest.approx(1.97 * (1.60 / 1.54) ** 2)
    # a steep slope: at least half the proportional step
    assert next_target((1.97, 1.54), 1.60, (1.96, 1.40)) == pytest.approx(1.97 * (1.60 / 1.54) ** 0.5)
    # a slope of the wrong sign says nothing: the proportional step
    assert next_target((1.97, 1.54), 1.60, (1.72, 1.60)) == pytest.approx(1.97 * 1.60 / 1.54)
    # an overshoot steps back, never past the other side's bound
    assert next_target((2.2, 1.70), 1.60, (1.97, 1.54)) < 2.2


def test_of_three_re_plans_that_bracket_a_peer_the_closest_on_each_side_are_kept() -> None:
    from planner.sweep import SWEEP_METHODS, _closest, _Entry

    def entry(key: str, speed: float, matched_to: str = "") -> _Entry:
        row = {"measured_speedup": speed}
        return _Entry(key, SWEEP_METHODS[key.split("@")[0]], 1.5, object(), object(), matched_to, row=row)  # type: ignore[arg-type]

    entries = [entry("spdy@1.5", 1.39), entry("depth@1.5", 1.60)]
    steps = [entry("spdy@1.5=depth", speed, "depth@1.5") for speed in (1.40, 1.54, 1.66)]
    kept = _closest({"spdy@1.5=depth": steps}, entries)
    assert [e.key for e in kept] == ["spdy@1.5=depth", "spdy@1.5=depth~3"]
    assert [e.model for e in kept] == [steps[1].model, steps[2].model]
    steps[2].row = {"measured_speedup": 1.63}  # within 3%: that one alone
    assert [e.model for e in _closest({"spdy@1.5=depth": steps}, entries)] == [steps[2].model]


def test_a_re_plan_is_timed_beside_its_baseline_and_compared_with_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's model is timed again in the re-plan's run, and the re-plan's miss is read against
    the baseline's speed in that run, not in the first: 1.66x against depth's 1.65x beside it is a match,
    though depth measured 1.60x in the first run."""
    import planner.sweep as sweep
    from planner.sweep import SWEEP_METHODS, _closest, _Entry, _matched_again

    class _Plan:
        target_speedup, predicted_speedup, solver, units = 2.15, 2.15, "dp", ()

    class _Speed:
        def __init__(self, value: float) -> None:
            self.value, self.low, self.high = value, value, value

    speeds = {"spdy@1.5=depth": 1.66, "depth@1.5": 1.65}

    class _Verification:
        def speedup(self, key: str) -> _Speed:
            return _Speed(speeds[key])

        def __getitem__(self, key: str) -> SimpleNamespace:
            return SimpleNamespace(median_ms=10.0)

    timed: list[dict[str, object]] = []

    def verify_models(adapter, models, measurement):  # type: ignore[no-untyped-def]
        timed.append(dict(models))
        return _Verification()

    monkeypatch.setattr(sweep, "verify_models", verify_models)
    depth_model, dense_model = object(), object()
    entries = [
        _Entry("spdy@1.5", SWEEP_METHODS["spdy"], 1.5, _Plan(), object(), row={"measured_speedup": 1.39}),  # type: ignore[arg-type]
        _Entry("depth@1.5", SWEEP_METHODS["depth"], 1.5, _Plan(), depth_model, row={"measured_speedup": 1.60}),  # type: ignore[arg-type]
    ]
    replan = _Entry("spdy@1.5=depth", SWEEP_METHODS["spdy"], 1.5, _Plan(), object(), "depth@1.5")  # type: ignore[arg-type]
    loaded = SimpleNamespace(model=dense_model, adapter=None)
    sweep._verify(loaded, [replan], entries, None)  # type: ignore[arg-type]
    assert timed == [{"dense": dense_model, "spdy@1.5=depth": replan.model, "depth@1.5": depth_model}]
    assert replan.row is not None and replan.row["baseline_speedup"] == 1.65
    assert _matched_again([replan], entries, lambda todo: [], 3.0, lambda _line: None) == []  # within 3%
    assert _closest({replan.key: [replan]}, entries) == [replan]
    replan.row["baseline_speedup"] = 1.60  # as if read against the first run: 3.75% off, one more step
    again = _matched_again(
        [replan], entries, lambda todo: [(_Plan(), object(), None, None) for _ in todo], 3.0, lambda _line: None
    )
    assert [e.key for e in again] == ["spdy@1.5=depth"]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(1.01, "tie")], "tie"),  # within 3%: its own verdict
        ([(0.98, "loss")], "loss"),
        ([(1.065, "loss")], "unresolved"),  # faster and worse: says nothing about equal speed
        ([(1.065, "win")], "win"),  # faster and still better
        ([(0.87, "win")], "unresolved"),  # slower and better: says nothing
        ([(0.87, "loss")], "loss"),  # slower and worse
        ([(0.87, "tie"), (1.065, "loss")], "unresolved"),  # a bracket that says nothing
        ([(0.87, "tie"), (1.065, "win")], "win"),
        ([(0.87, "loss"), (1.065, "win")], "unresolved"),  # contradictory: noise
        ([(0.99, "tie"), (1.065, "win")], "win"),
    ],
)
def test_the_verdict_at_equal_speed_reads_only_what_a_frontier_implies(
    points: list[tuple[float, str]], expected: str
) -> None:
    from planner.sweep import equal_speed_verdict

    assert equal_speed_verdict(points) == expected
