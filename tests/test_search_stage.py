"""The search stage on a tiny model: evolution and SPDY against the real shrunk-model loss, the final
pick on unseen calibration examples, re-planning a searched plan for another budget, bad settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import solvers
from planner.backends import get_backend
from planner.config import SearchSettings
from planner.errors import PlannerError
from planner.records.report import SearchSummary
from planner.stages.search import Recipe, check_search, search_levels
from tests.tiny_models import classifier_setup, loaded_of, table_for


def _setup() -> tuple[Any, Any, Any, Any, Any]:
    model, adapter, task = classifier_setup(n=24)
    table = table_for(adapter, loaded_of(model, adapter).fingerprint)
    backend = get_backend("fisher", progress=False)
    return adapter, task, table, backend, backend.score(adapter, task)


def _cost(table: Any, levels: Any) -> float:
    return float(sum(c[k] for c, k in zip(table.unit_costs(), levels, strict=True)))


def test_evolution_stage_is_feasible_deterministic_and_never_worse_than_its_seeds() -> None:
    adapter, task, table, backend, scores = _setup()
    budget = table.budget_ms(1.6)
    settings = SearchSettings("evolution", None, 8, "kl", 0, evaluations=40)

    def run() -> Any:
        return search_levels(
            adapter=adapter, task=task, table=table, scores=scores, backend=backend, budget_ms=budget, settings=settings
        )

    first, second = run(), run()
    result = first.result
    assert isinstance(result, solvers.EvolutionResult)
    assert first.levels == second.levels and result.history[-1].parent_loss == second.result.history[-1].parent_loss
    assert _cost(table, first.levels) <= budget + 1e-9
    assert {"dp", "uniform"} == {source for source, _ in result.seed_losses}
    assert result.loss <= min(loss for _, loss in result.seed_losses)
    assert all(_cost(table, c.levels) <= budget + 1e-9 for c in result.top)
    # Final pick on the 16 calibration documents the search never scored, uniform listed first.
    assert first.selection.examples == 16 and first.selection.contenders[0].source == "uniform"
    assert first.recipe.uniform == (first.selection.chosen.source == "uniform")
    # Cost accounting: evaluations on 1, 3 and 8 documents, then the final pick on 16.
    cost = first.cost
    assert cost["evaluations"] >= result.evaluations and cost["build_seconds"] > 0 and cost["forward_seconds"] > 0
    assert first.start_loss == min(loss for _, loss in result.seed_losses)


def test_spdy_stage_still_available() -> None:
    adapter, task, table, backend, scores = _setup()
    budget = table.budget_ms(1.6)
    outcome = search_levels(
        adapter=adapter,
        task=task,
        table=table,
        scores=scores,
        backend=backend,
        budget_ms=budget,
        settings=SearchSettings("spdy", None, 8, "kl", 0, evaluations=15),
    )
    assert isinstance(outcome.result, solvers.SearchResult) and outcome.result.evaluations <= 15
    assert _cost(table, outcome.levels) <= budget + 1e-9
    # The stage's time, split: the search loop and the final pick, both inside the stage's seconds.
    cost = outcome.cost
    assert cost["search_seconds"] > 0 and cost["pick_seconds"] > 0 and "budget_seconds" not in cost
    assert cost["search_seconds"] + cost["pick_seconds"] <= outcome.seconds + 1e-3


def _summary(search_seconds: float, budget: float | None) -> SearchSummary:
    cost = {"search_seconds": search_seconds, "pick_seconds": 190.0}
    if budget is not None:
        cost["budget_seconds"] = budget
    return SearchSummary("spdy", 3, 1.2, 1.2, "max_seconds", search_seconds + 190.0, cost=cost)


def test_a_search_far_past_its_budget_says_why_and_what_to_change() -> None:
    over = _summary(95.0, 30.0).time_text
    assert over is not None and over.startswith("the search 95 s, the final pick 190 s")
    assert "--search-seconds 30 is checked between rounds" in over and "--search-examples" in over
    # Within twice the budget, or with no time budget, only the split is given.
    assert _summary(55.0, 30.0).time_text == "the search 55 s, the final pick 190 s"
    assert _summary(95.0, None).time_text == "the search 95 s, the final pick 190 s"
    # A report written before the split was recorded has no such text.
    assert SearchSummary("spdy", 3, 1.2, 1.2, "max_seconds", 285.0, cost={"examples": 240.0}).time_text is None


@pytest.mark.parametrize("speedup", [1.3, 2.0])
def test_an_evolved_plan_is_repaired_to_another_budget(speedup: float) -> None:
    adapter, _, table, _, scores = _setup()
    anchor = tuple(solvers.solve_dp(table.unit_costs(), scores.unit_errors(), table.budget_ms(1.6)).levels)
    recipe = Recipe(None, anchor=anchor)
    assert recipe.label == "evolution" and not recipe.uniform
    budget = table.budget_ms(speedup)
    levels = recipe.levels(table, scores, budget, adapter.units())
    assert _cost(table, levels) <= budget + 1e-9
    # Tighter budget: more compression overall; looser: less (slack spent on the best guide moves).
    moved = int(np.sum(np.asarray(levels) - np.asarray(anchor)))
    assert moved > 0 if speedup > 1.6 else moved < 0


def test_search_settings_the_calibration_set_cannot_serve_are_refused() -> None:
    with pytest.raises(PlannerError, match="only 2 are available; give at least 4"):
        check_search(SearchSettings("evolution", 10.0, 2, "kl", 0), calibration=10)
    with pytest.raises(PlannerError, match="all 8 are search examples"):
        check_search(SearchSettings("evolution", 10.0, 8, "kl", 0), calibration=8)
    check_search(SearchSettings("spdy", 10.0, 2, "kl", 0), calibration=2)  # SPDY needs no stages


def test_the_search_objective_is_a_flag_and_a_wrong_one_is_refused_before_any_work(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from planner.cli import _config, build_parser, main

    for command in ("run", "sweep"):
        args = build_parser().parse_args([command, "--search-objective", "ce"])
        assert _config(args).search_objective == "ce"
        assert _config(build_parser().parse_args([command])).search_objective == "kl"
    out = tmp_path / "sweep"
    assert main(["sweep", "--search-objective", "mse", "--out", str(out)]) == 2
    assert "search_objective" in capsys.readouterr().err and not out.exists()


def test_the_search_sample_is_offered_to_the_pick_only_when_apart_from_its_examples() -> None:
    from planner.stages.search.runner import SEARCH, apart_from_pick, split_examples

    search, pick = split_examples(256, 128)
    assert apart_from_pick(256, len(pick)) == SEARCH and not set(search) & set(pick)
    search, pick = split_examples(16, 16)  # every example is the search's: the pick reuses them all
    assert apart_from_pick(16, len(pick)) is None and set(search) == set(pick)
