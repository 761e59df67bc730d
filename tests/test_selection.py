"""The final pick among the search's best plans and the uniform allocation."""

from __future__ import annotations

import math
from typing import Any

import pytest

from planner.stages.search.selection import Contender, select_plan


def test_the_lowest_held_out_loss_wins_and_each_plan_is_scored_once() -> None:
    losses = {(1, 0): 0.5, (0, 1): 0.2, (1, 1): 0.9}
    calls: list[tuple[int, ...]] = []

    def evaluate(levels: tuple[int, ...]) -> float:
        calls.append(levels)
        return losses[levels]

    contenders = [
        Contender("search #1", (1, 0), (1.0, 0.5), search_loss=0.1),
        Contender("search #2", (1, 1), (0.3, 0.5), search_loss=0.15),
        Contender("search #3", (1, 0), (0.9, 0.5), search_loss=0.16),  # same levels as #1
        Contender("uniform", (0, 1), None),
    ]
    selection = select_plan(contenders, evaluate, examples=7)
    assert sorted(calls) == sorted(losses)  # three distinct plans, three evaluations
    assert selection.chosen.source == "uniform" and selection.chosen.loss == 0.2
    assert [c.source for c in selection.contenders] == ["search #1", "search #2", "uniform"]
    summary = selection.as_dict()
    assert summary["chosen"] == "uniform" and summary["examples"] == 7
    assert summary["contenders"][0] == {"source": "search #1", "search_loss": 0.1, "loss": 0.5, "scoring": None}


def test_ties_go_to_the_earlier_contender() -> None:
    selection = select_plan(
        [Contender("search #1", (1,), (1.0,)), Contender("uniform", (2,), None)], lambda _l: 1.0, examples=1
    )
    assert selection.chosen.source == "search #1"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        select_plan([], lambda _l: 0.0, examples=1)
    with pytest.raises(ValueError, match="finite"):
        select_plan([Contender("uniform", (0,), None)], lambda _l: math.nan, examples=1)


def test_a_searched_plan_replaces_uniform_only_when_it_wins_with_confidence() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    uniform = rng.uniform(0.1, 0.3, size=64)
    noisy = uniform + rng.normal(-0.005, 0.05, size=64)  # lower on average, but within the noise
    clear = uniform - 0.02 + rng.normal(0.0, 0.002, size=64)  # lower on nearly every example
    losses = {(1,): noisy, (2,): clear, (0,): uniform}

    def pick(*levels: tuple[int, ...], admissible: object = None) -> Any:
        contenders = [Contender("uniform", (0,), None)] + [
            Contender(f"search #{i}", lv, (1.0,)) for i, lv in enumerate(levels, 1)
        ]
        return select_plan(contenders, losses.__getitem__, examples=64, admissible=admissible)  # type: ignore[arg-type]

    doubtful = pick((1,))
    assert doubtful.lowest.source == "search #1" and doubtful.kept_uniform and doubtful.chosen.source == "uniform"
    assert doubtful.versus_uniform is not None and doubtful.versus_uniform.low < 0 <= doubtful.versus_uniform.high
    assert doubtful.as_dict()["versus_uniform"]["kept_uniform"] is True
    confident = pick((2,))
    assert confident.chosen.source == "search #1" and not confident.kept_uniform
    assert confident.versus_uniform is not None and confident.versus_uniform.high < 0
    # Uniform outside --max-loss is never kept for this reason.
    forced = pick((1,), admissible=lambda lv: lv != (0,))
    assert forced.chosen.source == "search #1" and not forced.kept_uniform
