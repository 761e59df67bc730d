"""Recovery by distillation on the real SmolLM2: the held-out perplexity curve under a time budget.

1. ``planner run`` (no recovery) plans SmolLM2 for ``--speedup`` at prefill batch 8 x seq 128 with the
   default search and final pick, applies it for real and measures it: the pruned model and its
   measured speedup.
2. A learning-rate sweep (``--sweep``, ``--sweep-seconds`` each) picks the peak learning rate by the
   validation KL (held-out *training* windows: the test set never chooses anything).
3. ``planner.stages.recover.recover`` distils that model from the dense one for ``--seconds`` on the
   training windows (never the test or calibration windows); at every validation point the
   *test* perplexity is measured too (the curve: perplexity vs tokens and seconds; its time counts
   against the budget, so the figure is conservative).
4. The recovered model is timed against the dense one and against the un-recovered pruned model,
   interleaved (same shapes: the speedup must not move).

Peak RSS of the process is recorded (teacher + student + optimiser).

Last line: ``dense_ppl=<x> pruned_ppl=<y> recovered_ppl=<z> gap_closed=<f> speedup_before=<a>
speedup_after=<b> peak_rss_gb=<m> seconds=<s>``.

Run: ``.venv/bin/python benchmarks/recover_bench.py [--speedup 1.5] [--seconds 600] [--sweep 1e-4 3e-4 1e-3]
[--lr 1e-4]``
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from planner.config import RunConfig
from planner.pipeline import run_pipeline
from planner.stages.apply.pruned_io import backbone_of, load_pruned
from planner.stages.load import configured_task, load_configured
from planner.stages.recover import CurvePoint, RecoverySettings, recover
from planner.stages.verify import verify_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--speedup", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--lr", type=float, default=None, help="skip the sweep and use this learning rate")
    parser.add_argument("--sweep", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--sweep-seconds", type=float, default=120.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--search-seconds", type=float, default=60.0)
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    started = time.perf_counter()
    config = RunConfig(
        model=args.model,
        speedup=args.speedup,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        search_seconds=args.search_seconds,
        accept_noisy=True,
    )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="recover-bench-")) / "run"
    report = run_pipeline(config, out=out, overwrite=True, progress=False, log=print)
    print(
        f"plan: measured {report.measured_speedup:.2f}x [{report.speedup_low:.2f}-{report.speedup_high:.2f}], "
        f"perplexity dense {report.metric.dense:.2f} -> pruned {report.metric.pruned:.2f}; kept heads "
        f"{list(report.heads_kept)} neurons {list(report.neurons_kept)}",
        flush=True,
    )
    loaded = load_configured(config)
    task = configured_task(config, loaded)
    pruned = backbone_of(load_pruned(out / "pruned"))
    curve: list[tuple[CurvePoint, float]] = []

    def on_eval(model: object, point: CurvePoint) -> None:
        ppl = task.evaluate(model).value  # type: ignore[arg-type]
        curve.append((point, ppl))
        print(
            f"  step {point.step:>5} tokens {point.tokens:>9,} seconds {point.seconds:>6.0f} "
            f"validation_kl {point.kl:.4f} test_perplexity {ppl:.2f}",
            flush=True,
        )

    lr = args.lr
    if lr is None:
        swept = {}
        for candidate in args.sweep:
            trial = RecoverySettings(seconds=args.sweep_seconds, lr=candidate, eval_every=10**9, patience=1000)
            _, trial_log = recover(loaded.adapter, pruned, task, trial)
            swept[candidate] = trial_log.validation[-1].kl
            print(
                f"  sweep lr {candidate:g}: {trial_log.steps} steps in {trial_log.seconds:.0f} s, validation KL "
                f"{trial_log.validation[0].kl:.4f} -> {trial_log.validation[-1].kl:.4f}",
                flush=True,
            )
        lr = min(swept, key=lambda k: swept[k])
        print(f"  chosen lr {lr:g} (lowest validation KL after {args.sweep_seconds:g} s)", flush=True)
    settings = RecoverySettings(seconds=args.seconds, lr=lr, eval_every=args.eval_every, patience=1000)
    recovered, log = recover(loaded.adapter, pruned, task, settings, on_eval=on_eval)
    final_ppl = task.evaluate(recovered).value
    timing = verify_models(
        loaded.adapter,
        {"dense": loaded.model, "pruned": pruned, "recovered": recovered},
        config.measurement(rounds=config.verify_rounds),
    )
    before, after = timing.speedup("pruned"), timing.speedup("recovered")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    dense, pruned_ppl = report.metric.dense, report.metric.pruned
    closed = (pruned_ppl - final_ppl) / (pruned_ppl - dense) if pruned_ppl > dense else float("nan")
    print(
        f"recovery: {log.steps} steps, {log.tokens:,} tokens, {log.seconds:.0f} s ({log.stopped}); "
        f"{log.examples} training windows, {log.validation_examples} validation windows; lr {lr:g}"
    )
    print(
        f"speedup vs dense: pruned {before.value:.2f}x [{before.low:.2f}-{before.high:.2f}], recovered "
        f"{after.value:.2f}x [{after.low:.2f}-{after.high:.2f}] ({timing.rounds} interleaved rounds)"
    )
    print(
        f"dense_ppl={dense:.2f} pruned_ppl={pruned_ppl:.2f} recovered_ppl={final_ppl:.2f} gap_closed={closed:.2f} "
        f"speedup_before={before.value:.2f} speedup_after={after.value:.2f} peak_rss_gb={peak_gb:.2f} "
        f"seconds={time.perf_counter() - started:.0f}"
    )


if __name__ == "__main__":
    main()
