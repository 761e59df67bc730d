"""The final pick among the search's best plans and the uniform allocation."""

from __future__ import annotations

import math

import pytest

from planner.search.selection import Contender, select_plan


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
    assert summary["contenders"][0] == {"source": "search #1", "search_loss": 0.1, "loss": 0.5}


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
