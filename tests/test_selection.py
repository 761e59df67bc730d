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


def test_two_priors_the_search_did_not_rank_are_also_tested_on_the_search_sample() -> None:
    import numpy as np

    uniform_pick, uniform_search = np.linspace(0.1, 0.3, 64), np.linspace(0.3, 0.1, 64)
    # The DP plan is lower on both samples (by 0.01 and 0.03 on average, each example +-0.08 about
    # that): the pick's 64 examples alone cannot confirm it (interval about +-0.02), all 128 can.
    spread = 0.08 * np.resize([1.0, -1.0], 64)
    dp_pick, dp_search = uniform_pick - 0.01 + spread, uniform_search - 0.03 + spread
    pick_losses = {(0,): uniform_pick, (1,): dp_pick, (2,): uniform_pick + 0.1}
    search_losses = {(0,): uniform_search, (1,): dp_search, (2,): uniform_search - 0.2}
    asked: list[tuple[int, ...]] = []

    def evidence(levels: tuple[int, ...]) -> Any:
        asked.append(levels)
        return search_losses[levels]

    def pick(searched: tuple[int, ...], *, with_evidence: bool = True) -> Any:
        contenders = [
            Contender("uniform", (0,), None),
            Contender("dp", (1,), (1.0,)),
            Contender("search #1", searched, (0.5,), search_loss=0.01),
        ]
        return select_plan(
            contenders, pick_losses.__getitem__, examples=64, evidence=evidence if with_evidence else None
        )

    alone = pick((2,), with_evidence=False)
    assert alone.lowest.source == "dp" and alone.kept_uniform and alone.tested == 64
    pooled = pick((2,))
    assert pooled.chosen.source == "dp" and not pooled.kept_uniform and pooled.tested == 128
    assert pooled.versus_uniform is not None and pooled.versus_uniform.high < 0
    assert sorted(asked) == [(0,), (1,)]  # only the two priors, never the searched plan
    assert pooled.as_dict()["versus_uniform"]["examples"] == 128
    # The search ranked the DP plan's levels among its best: its search loss is no longer held out.
    asked.clear()
    ranked = pick((1,))
    assert ranked.kept_uniform and ranked.tested == 64 and not asked


def test_a_searched_plan_is_tested_on_the_pick_examples_only() -> None:
    import numpy as np

    rng = np.random.default_rng(2)
    uniform = rng.uniform(0.1, 0.3, size=32)
    losses = {(0,): uniform, (1,): uniform - 0.05, (2,): uniform + rng.normal(-0.01, 0.05, size=32)}

    def evidence(levels: tuple[int, ...]) -> Any:
        raise AssertionError("a searched plan's own sample is not evidence for it")

    contenders = [
        Contender("uniform", (0,), None),
        Contender("dp", (2,), (1.0,)),
        Contender("search #1", (1,), (0.5,), search_loss=0.01),
    ]
    selection = select_plan(contenders, losses.__getitem__, examples=32, evidence=evidence)
    assert selection.chosen.source == "search #1" and selection.tested == 32
