"""The search scores candidates the ways the apply stage's recipes fill a plan's units
(``planner.stages.search.scoring``): each scoring's candidate is the model that recipe builds, the
search runs under the scoring its seeds scored lowest under, and the final pick keeps each contender's
best scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from planner.backends import FisherBackend, MagnitudeBackend
from planner.backends.compensation import compensated_shrink
from planner.backends.flap import FlapBackend
from planner.config import SearchSettings
from planner.stages.search import search_levels
from planner.stages.search.pool import PoolStats, Request
from planner.stages.search.runner import _pick, choose_scoring
from planner.stages.search.samples import SEARCH, SELECTION, SampleLosses
from planner.stages.search.scoring import scoring_names
from planner.stages.search.selection import Contender
from tests.tiny_models import TINY_ADAPTERS, TINY_TASKS, classifier_setup, loaded_of, table_for

FAMILIES = ("bert", "llama", "gpt2")


def test_each_recipe_gives_its_scoring_the_backends_own_first() -> None:
    llama = TINY_ADAPTERS["llama"]()
    assert scoring_names(llama, FisherBackend()) == ("fisher", "fisher + compensation", "flap + compensation")
    # One recipe, one scoring: no tuning (no other recipes), magnitude (no recipes at all).
    assert scoring_names(llama, FisherBackend(tune=False)) == ("fisher",)
    assert scoring_names(llama, FisherBackend(tune=False, compensate=True)) == ("fisher + compensation",)
    assert scoring_names(llama, MagnitudeBackend()) == ("magnitude",)
    assert scoring_names(llama, MagnitudeBackend(compensate=True)) == ("magnitude + compensation",)


def _levels(adapter: Any) -> tuple[int, ...]:
    """A cut that exercises every case: the last layer removed whole (both blocks emptied), layer 0's
    attention at a middle level, its FFN kept dense, the others at their first cut."""
    last = max(int(u.layer) for u in adapter.units())
    levels = []
    for unit in adapter.units():
        if unit.layer == last:
            levels.append(len(unit.levels) - 1)
        elif unit.layer == 0:
            levels.append(len(unit.levels) // 2 if unit.kind == "attention" else 0)
        else:
            levels.append(1)
    return tuple(levels)


def _logits(task: Any, model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([task.logits(model, ids, mask) for ids, mask, _ in task.calibration.batches(4)])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_scorings_candidate_is_the_model_its_recipe_applies(family: str) -> None:
    adapter = TINY_ADAPTERS[family]()
    task = TINY_TASKS[family](adapter)
    backend = FisherBackend(progress=False)
    scores = backend.score(adapter, task)
    losses = SampleLosses(
        adapter=adapter, task=task, backend=backend, scores=scores, samples={SEARCH: (0, 1)}, objective="kl"
    )
    levels = _levels(adapter)
    units = adapter.units()
    flap = FlapBackend()
    flap_scores = flap.score(adapter, task)
    fisher_keep = {u.name: backend.select(scores, u, u.levels[k]) for u, k in zip(units, levels, strict=True) if k}
    flap_keep = {u.name: flap.select(flap_scores, u, u.levels[k]) for u, k in zip(units, levels, strict=True) if k}
    expected = {
        "fisher": adapter.shrink(fisher_keep),
        "fisher + compensation": compensated_shrink(adapter, fisher_keep, task),
        "flap + compensation": compensated_shrink(adapter, flap_keep, task),
    }
    assert tuple(losses.scorings) == tuple(expected)
    dense = _logits(task, adapter.model)
    scale = float(dense.abs().max())  # the tiny decoders' logits are ~1e-3: compare relative to it
    got = {name: _logits(task, losses.model(levels, name)) / scale for name in expected}
    for name, model in expected.items():
        torch.testing.assert_close(got[name], _logits(task, model) / scale, rtol=1e-4, atol=1e-5, msg=name)
    # The scorings differ (else the test would not tell them apart), and none touched the dense model.
    assert float((got["fisher"] - got["fisher + compensation"]).abs().max()) > 1e-3
    assert flap_keep != fisher_keep
    torch.testing.assert_close(_logits(task, adapter.model), dense)


class FakePool:
    """A pool whose loss of (levels, sample, scoring) is a given function, per example."""

    kind, workers = "fake", 1

    def __init__(self, loss: Any, examples: int = 8) -> None:
        self.loss, self.examples, self.stats = loss, examples, PoolStats()
        self.requests: list[Request] = []

    def losses(self, requests: Sequence[Request]) -> list[np.ndarray]:
        self.requests += list(requests)
        offsets = np.linspace(-0.01, 0.01, self.examples)
        return [self.loss(levels, scoring) + offsets for levels, _, scoring in requests]

    def close(self) -> None:
        pass


def test_the_search_runs_under_the_scoring_its_seeds_scored_lowest_under() -> None:
    table = {("plain", (1,)): 3.0, ("plain", (2,)): 5.0, ("comp", (1,)): 4.0, ("comp", (2,)): 2.5}
    pool = FakePool(lambda levels, scoring: table[(scoring, levels)])
    chosen, lowest = choose_scoring(pool, ("plain", "comp"), [(1,), (2,)])
    assert chosen == "comp" and lowest == pytest.approx({"plain": 3.0, "comp": 2.5})
    assert {(s, r) for _, s, r in pool.requests} == {(SEARCH, "plain"), (SEARCH, "comp")}
    # One scoring: nothing to choose, nothing evaluated.
    single = FakePool(lambda levels, scoring: 0.0)
    assert choose_scoring(single, ("plain",), [(1,)]) == ("plain", None) and not single.requests


def test_the_final_pick_scores_each_contender_its_best_way() -> None:
    # Uncompensated, the searched plan looks far better than uniform; compensated (as the apply would
    # fill both), uniform is better: the pick must keep uniform, and say how each was scored.
    table = {("plain", (0,)): 10.3, ("plain", (1,)): 7.4, ("comp", (0,)): 4.1, ("comp", (1,)): 4.5}
    pool = FakePool(lambda levels, scoring: table[(scoring, levels)])
    contenders = [Contender("uniform", (0,), None), Contender("search #1", (1,), (1.0,), 7.0)]
    selection = _pick(contenders, pool, ("plain", "comp"), examples=8, admissible=None, apart=None)
    assert selection.chosen.source == "uniform"
    assert {c.source: (c.scoring, round(c.loss, 6)) for c in selection.contenders} == {
        "uniform": ("comp", 4.1),
        "search #1": ("comp", 4.5),
    }
    assert {s for _, s, _ in pool.requests} == {SELECTION}
    # Scored under the plain way only (the old pick), the searched plan would have won.
    old = _pick(contenders, FakePool(lambda levels, scoring: table[(scoring, levels)]), ("plain",), examples=8,
                admissible=None, apart=None)  # fmt: skip
    assert old.chosen.source == "search #1"


def test_the_quality_limit_judges_a_contender_as_it_was_scored() -> None:
    table = {("plain", (0,)): 1.0, ("plain", (1,)): 2.0, ("comp", (0,)): 3.0, ("comp", (1,)): 0.5}
    pool = FakePool(lambda levels, scoring: table[(scoring, levels)])
    seen: list[tuple[tuple[int, ...], str]] = []

    def admissible(levels: tuple[int, ...], scoring: str) -> bool:
        seen.append((levels, scoring))
        return True

    _pick([Contender("uniform", (0,), None), Contender("dp", (1,), (1.0,))], pool, ("plain", "comp"), examples=8,
          admissible=admissible, apart=None)  # fmt: skip
    assert sorted(seen) == [((0,), "plain"), ((1,), "comp")]


def test_a_search_reports_its_scoring_and_the_report_reads_it_back() -> None:
    model, adapter, task = classifier_setup(n=24)
    table = table_for(adapter, loaded_of(model, adapter).fingerprint)
    backend = FisherBackend(progress=False)
    outcome = search_levels(
        adapter=adapter,
        task=task,
        table=table,
        scores=backend.score(adapter, task),
        backend=backend,
        budget_ms=table.budget_ms(1.6),
        settings=SearchSettings("spdy", None, 8, "kl", 0, evaluations=6),
    )
    names = scoring_names(adapter, backend)
    assert len(names) == 3 and outcome.scoring in names
    assert outcome.seed_losses is not None and set(outcome.seed_losses) == set(names)
    assert outcome.seed_losses[outcome.scoring] == min(outcome.seed_losses.values())
    assert all(c.scoring in names for c in outcome.selection.contenders)
    said = outcome.text()
    assert said.startswith(f"searched as {outcome.scoring} (the seeds' lowest loss: fisher ")
    assert f"; {outcome.result.evaluations} evaluations in " in said
    assert f"best {outcome.result.loss:.4g} from {outcome.start_loss:.4g} on the search sample" in said
    assert f"final pick {outcome.selection.chosen.source} (uniform " in said
    summary = outcome.summary()
    assert summary.scoring == {"chosen": outcome.scoring, "seed_losses": outcome.seed_losses}
    assert summary.selection is not None and all(c.scoring in names for c in summary.selection.contenders)
