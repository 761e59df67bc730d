"""Equal-time comparison of the searches: evolution vs SPDY's local search vs the plain DP.

For one model and target: the cached latency table and Fisher scores (``planner run`` would build the
same), then for each seed and each method a search with the same wall-time budget, followed by the
same final pick on the calibration examples the search did not score. Judged on the test set, which
neither the search nor the pick saw: the chosen plan's mean KL to the dense model, its units filled the
way the pick scored it (its scoring: whose heads/neurons, with or without bias compensation; no mask
tuning, which every method gets alike), beside the plain DP plan's the same way. Methods are
interleaved per seed so drifts of the machine hit all of them alike. Also: evaluations per second
and the share of evaluation time spent building candidates (vs forward passes).

Last line: ``kl_evolution=<mean> kl_spdy=<mean> kl_dp=<x> evo_vs_spdy=<mean paired diff>
evaluations_per_s_evolution=<x> build_share_evolution=<x>``.

Run: ``.venv/bin/python benchmarks/search_bench.py [--model minilm|smollm2] [--speedup 2]
[--seconds 60] [--seeds 0 1 2] [--batch-size 8 --seq-len 128] [--accept-noisy] [--executor ray --workers 2]
[--search-examples N] [--calibration-size N] [--random-shares 1 0.5]``

``--random-shares`` runs SPDY once per share of its budget its random starts may use
(``runner.SPDY_RANDOM_SHARE``; 1 = random starts until the budget or 100 of them), labelled
``spdy@<share>``, interleaved with the other methods per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np

from planner.backends import get_backend
from planner.config import RunConfig
from planner.executors import Executor
from planner.pipeline import StageClock, prepare
from planner.stages.score import cached_scores
from planner.stages.search import CandidateLoss, runner, search_levels
from planner.stages.search.builder import CandidateBuilder
from planner.stages.search.scoring import Scoring, scorings_for
from solvers import SearchResult


def heldout_losses(prepared: Any, scorings: dict[str, Scoring]) -> dict[str, CandidateLoss]:
    """scoring name -> mean KL to the dense model on the test set of a shrunk model, its units filled as
    that scoring fills them (the way the final pick scored a plan: the apply keeps the recipe closest to
    dense). One loss per scoring, so its shrunk layers are cut once across every plan judged."""
    return {
        name: CandidateLoss(
            adapter=prepared.loaded.adapter,
            task=prepared.task,
            backend=scoring.selector,
            scores=scoring.scores,
            tokens=prepared.task.test,
            objective="kl",
            builder=CandidateBuilder(prepared.loaded.adapter, means=scoring.means),
        )
        for name, scoring in scorings.items()
    }


def paired(results: dict[str, list[dict[str, float]]], a: str, b: str, name: str | None = None) -> str:
    """`` <name>=<mean>`` (default name ``a_vs_b``) of the per-seed held-out KL differences a - b, printing
    them per seed."""
    diffs = [x["kl"] - y["kl"] for x, y in zip(results[a], results[b], strict=True)]
    print(f"{a} - {b} per seed: {', '.join(f'{d:+.4f}' for d in diffs)}")
    return f" {name or f'{a}_vs_{b}'}={np.mean(diffs):+.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["evolution", "spdy"])
    parser.add_argument("--space", default="levels", help="what the evolution mutates: levels, coefficients, mixed")
    parser.add_argument("--accept-noisy", action="store_true", help="reuse a cached table flagged noisy")
    parser.add_argument("--executor", default="local", help="local, or ray (with --workers)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--search-examples", type=int, default=None)
    parser.add_argument("--calibration-size", type=int, default=None)
    parser.add_argument("--random-shares", type=float, nargs="+", default=None)
    args = parser.parse_args()
    runner.EVOLUTION_SPACE = args.space
    overrides = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("seq_len", args.seq_len),
            ("search_examples", args.search_examples),
            ("calibration_size", args.calibration_size),
            ("executor", args.executor),
            ("workers", args.workers),
        )
        if v is not None
    }
    config = RunConfig(
        model=args.model,
        speedup=args.speedup,
        search_seconds=args.seconds,
        accept_noisy=args.accept_noisy,
        **overrides,  # type: ignore[arg-type]
    )
    prepared = prepare(config, StageClock(), progress=False, log=lambda m: print(m, file=sys.stderr))
    backend = get_backend("fisher", progress=False)
    scores = cached_scores(backend, prepared.loaded, prepared.task, cache_dir=config.cache_dir)
    task, table = prepared.task, prepared.table
    budget = table.budget_ms(args.speedup)
    print(
        f"{args.model}: {len(table.unit_costs())} units, budget {budget:.1f} ms for {args.speedup:g}x, "
        f"{len(task.calibration)} calibration / {len(task.test)} test examples, {args.seconds:g} s per search"
    )
    from planner.stages.search.runner import Recipe

    dp_levels = tuple(
        Recipe((1.0,) * len(table.unit_costs())).levels(table, scores, budget, prepared.loaded.adapter.units())
    )
    uniform_levels = tuple(Recipe(None).levels(table, scores, budget, prepared.loaded.adapter.units()))
    heldout = heldout_losses(prepared, scorings_for(prepared.loaded.adapter, task, backend, scores))
    judged: dict[tuple[tuple[int, ...], str], float] = {}

    def judge(levels: tuple[int, ...], scoring: str | None) -> float:
        """Held-out KL under ``scoring`` (None: the backend's own), each plan and scoring once."""
        name = scoring or next(iter(heldout))
        if (levels, name) not in judged:
            judged[levels, name] = heldout[name](levels)
        return judged[levels, name]

    every = {name: (judge(dp_levels, name), judge(uniform_levels, name)) for name in heldout}
    print(
        "held-out KL of the plain DP plan / uniform under each scoring (not a choice: the test set): "
        + "; ".join(f"{name} {dp:.4f} / {uni:.4f}" for name, (dp, uni) in every.items())
    )
    spdy_shares: list[float | None] = list(args.random_shares or [None])
    variants = [
        (m if share is None else f"{m}@{share:g}", m, share)
        for m in args.methods
        for share in (spdy_shares if m == "spdy" else [None])
    ]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in variants}
    executor = Executor(config.executor_settings())
    pools = {}
    for method in args.methods:
        settings = config.replace(search=method).search_settings(
            calibration=len(task.calibration), default_examples=task.search_examples
        )
        pools[method] = executor.search_pool(
            config=config, loaded=prepared.loaded, task=task, backend=backend, scores=scores, settings=settings
        )
    default_share = runner.SPDY_RANDOM_SHARE
    for seed in args.seeds:
        for label, method, share in variants:
            runner.SPDY_RANDOM_SHARE = default_share if share is None else share
            settings = config.replace(search=method, seed=seed).search_settings(
                calibration=len(task.calibration), default_examples=task.search_examples
            )
            started = time.perf_counter()
            outcome = search_levels(
                adapter=prepared.loaded.adapter,
                task=task,
                table=table,
                scores=scores,
                backend=backend,
                budget_ms=budget,
                settings=settings,
                pool=pools[method],
            )
            seconds = time.perf_counter() - started
            chosen = outcome.selection.chosen
            kl = judge(tuple(outcome.levels), chosen.scoring)
            # the pick scores identical levels once, under the first source (uniform's name when the DP plan is uniform)
            contenders = outcome.selection.contenders
            dp_scoring = next((c.scoring for c in contenders if c.levels == dp_levels), chosen.scoring)
            kl_dp_here = judge(dp_levels, dp_scoring)
            cost = outcome.cost
            busy = cost.get("build_seconds", 0.0) + cost.get("forward_seconds", 0.0) or seconds
            row = {
                "kl": kl,
                "kl_dp": kl_dp_here,
                "search_loss": outcome.result.loss,
                "evaluations": float(outcome.result.evaluations),
                "evaluations_per_s": cost["evaluations"] / max(busy, 1e-9),
                "examples_per_s": cost["examples"] / max(busy, 1e-9),
                "build_share": cost.get("build_share", float("nan")),
                "seconds": seconds,
            }
            picked = {c.source: c for c in contenders}
            best, uniform = picked.get("search #1"), picked.get("uniform")
            print(
                f"  search #1: loss {best.search_loss if best else float('nan'):.4f} on the search sample, "
                f"{best.loss if best else float('nan'):.4f} on the held-out calibration examples; uniform "
                f"{uniform.loss if uniform else float('nan'):.4f} there",
                flush=True,
            )
            results[label].append(row)
            origin = ""
            if isinstance(outcome.result, SearchResult):  # did the search's best come from a random start?
                origin = f" (start {outcome.result.start_loss:.4f}, best from its {outcome.result.top[0].phase} phase)"
            print(
                f"seed {seed} {label:9s}: held-out KL {kl:.4f} | search loss {outcome.result.loss:.4f} on "
                f"{settings.examples} examples{origin} | {outcome.result.evaluations} evaluations "
                f"({row['evaluations_per_s']:.2f}/s, {row['examples_per_s']:.0f} examples/s, "
                f"{100 * row['build_share']:.0f}% building) | pick: {chosen.source} as {chosen.scoring} "
                f"(the DP plan {kl_dp_here:.4f} held out as {dp_scoring}) | "
                f"{seconds:.0f} s incl. pick",
                flush=True,
            )
    summary = {}
    for method, rows in results.items():
        kls = [r["kl"] for r in rows]
        spread = statistics.stdev(kls) if len(kls) > 1 else 0.0
        summary[method] = float(np.mean(kls))
        print(
            f"{method:9s}: held-out KL mean {np.mean(kls):.4f} sd {spread:.4f} (min {min(kls):.4f}, max {max(kls):.4f})"
        )
    differences = ""
    if {"evolution", "spdy"} <= set(results):
        differences = paired(results, "evolution", "spdy", name="evo_vs_spdy")
    shares = [label for label, _, share in variants if share is not None]
    for label in shares[1:]:
        differences += paired(results, label, shares[0])
    evo = results.get("evolution", [])
    tail = ""
    if evo:
        tail = (
            f" evaluations_per_s_evolution={np.mean([r['evaluations_per_s'] for r in evo]):.2f}"
            f" build_share_evolution={np.mean([r['build_share'] for r in evo]):.3f}"
        )
    executor.close()
    means = " ".join(f"kl_{m}={v:.4f}" for m, v in summary.items())
    kl_dp = float(np.mean([r["kl_dp"] for rows in results.values() for r in rows]))
    print(f"{means} kl_dp={kl_dp:.4f}{differences}{tail}")


if __name__ == "__main__":
    main()
