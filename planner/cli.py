"""``planner`` command line: a thin shell over the Python API (one public function per command).

Every setting is a ``RunConfig`` field: the flags default to None here and the config supplies (and
validates) the defaults, so a bad name or range exits 2 with one line before any work starts.
``--debug`` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from planner.errors import PlannerError
from planner.version import __version__


def _default(name: str) -> Any:
    """The ``RunConfig`` default of a field (for help texts; the config is the one source)."""
    from planner.config import RunConfig

    field = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    return None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _flag(p: Any, name: str, help_text: str, *, type_: Callable[[str], Any] = str, **kwargs: Any) -> None:
    """A flag for the ``RunConfig`` field ``name`` (default None: the config's default applies)."""
    default = _default(name)
    shown = f" (default: {default})" if default is not None else ""
    p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type_, default=None, help=help_text + shown, **kwargs)


def _add_model(p: Any) -> None:
    _flag(p, "model", "'minilm', 'smollm2' (bundled), a Hugging Face folder, a .gguf file, or pkg.mod:factory")
    p.add_argument(
        "--random-weights",
        dest="random_weights",
        action="store_true",
        default=None,
        help="a bundled model's real shape with random weights (timing checks without its weight files)",
    )


def _add_device(p: Any, *, shape: bool = True) -> None:
    """--runtime/--device/--dtype/--batch-size/--seq-len/--phase/--generate/--threads/--rounds."""
    _flag(
        p,
        "runtime",
        "torch, onnxruntime (the transformer-optimized graph, as deployed), onnxruntime-plain, or llama.cpp "
        "(decoders as GGUF, batch 1, CPU)",
    )
    _flag(p, "device", "cpu or cuda")
    _flag(
        p,
        "execution",
        "eager, cuda-graphs (every workload captured once and replayed, as GPU serving runs it; torch on CUDA), "
        "or auto (cuda-graphs with torch on CUDA, else eager)",
    )
    _flag(p, "dtype", "float32, float16 or bfloat16")
    if shape:
        _flag(p, "batch_size", "the batch size you deploy with", type_=_int)
        _flag(p, "seq_len", "the sequence length (LM decode: tokens already in the KV cache)", type_=_int)
        _flag(p, "phase", "prefill (the prompt at once) or decode (one new token with a KV cache)")
        _flag(p, "generate", "plan for a reply of N tokens: prefill + N decode steps (0 = off)", type_=_int)
    _flag(p, "threads", "intra-op threads (0 = all cores)", type_=_int)
    _flag(p, "rounds", "quiet timed samples per workload, at least", type_=_int)
    _flag(
        p, "max_rounds", "samples at most while a workload's estimate has not settled (default: 3 x rounds)", type_=_int
    )
    _flag(p, "stability", "settled when the estimate's 95%% interval is narrower than this share of it", type_=_float)
    _flag(p, "profile_seconds", "time cap of one profile's sampling, s (default: none)", type_=_float)


def _add_task(p: Any) -> None:
    _flag(p, "data", "'bbc' (bundled BBC News), a folder of <class>/*.txt or .txt files, or a .csv/.jsonl file")
    _flag(p, "task", "auto, text-classification or causal-lm (auto follows from the model)")
    _flag(p, "calibration_size", "calibration examples (Fisher, mask tuning, search, final pick)", type_=_int)
    _flag(p, "seed", "seed of data splits, searches and timing order", type_=_int)


def _config(args: argparse.Namespace) -> Any:
    """A validated ``RunConfig`` from the flags that were given (others keep their defaults)."""
    from planner.config import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return RunConfig(**values)


# ----- profile ---------------------------------------------------------------------------------
def _add_profile(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a per-unit latency table on this device",
        description="Measure the latency of every prunable unit at every candidate level, plus whole models "
        "end to end, on this device and runtime at the given input shape and phase.",
    )
    _add_model(p)
    _add_device(p)
    _flag(p, "warmup", "extra untimed calls per workload", type_=_int)
    _flag(p, "ffn_step", "FFN neuron grid step (default: about 25 levels)", type_=_int)
    _flag(p, "sparsity_levels", "generic layers: unstructured sparsity levels (default: 12)", type_=_int)
    p.add_argument("--smooth", action="store_true", help="fit non-increasing curves to heads/neurons (raw kept)")
    p.add_argument("--out", required=True, help="CSV path; a JSON sidecar with the metadata is written beside it")
    p.add_argument("--force", action="store_true", help="re-measure even if --out holds a matching table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from planner.workflows import profile_with_headroom

    config = _config(args)
    if args.smooth:
        config = config.replace(smoothing="monotone")
    out = Path(args.out)
    existed = out.exists() and not args.force
    table, headroom = profile_with_headroom(config, out=out, progress=not args.no_progress, reuse=not args.force)
    print(("reused " if existed else "wrote ") + f"{out} (+ {out.with_suffix('.json').name})")
    print(table.summary())
    if headroom is not None:
        print(f"  headroom: {headroom.text()}")
    return 0


# ----- plan / apply / verify -------------------------------------------------------------------
def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="choose per-unit levels that meet a speedup on a measured table",
        description="Turn a latency table (measured on the target device) and locally computed error scores "
        "into a plan: one level per unit meeting the speedup with the least estimated loss.",
    )
    p.add_argument("--table", required=True, help="latency table CSV from `planner profile` (on the target device)")
    _flag(p, "speedup", "target speedup over the dense model, > 1", type_=_float, required=True)
    _add_model(p)
    _flag(p, "backend", "fisher (needs --data) or magnitude")
    _flag(p, "solver", "dp, greedy, uniform or milp")
    _add_task(p)
    p.add_argument("--force-table", action="store_true", help="use a table measured for other weights, same shapes")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from planner.workflows import create_plan

    plan = create_plan(_config(args), table=args.table, force_table=args.force_table, out=args.out)
    print(
        f"wrote {args.out}: {plan.backend} + {plan.solver}, predicted {plan.predicted_ms:.1f} ms "
        f"({plan.predicted_speedup:.2f}x, target {plan.target_speedup:g}x) on {plan.table['device']} / "
        f"{plan.table['runtime']}"
    )
    for choice in plan.units:
        print(f"  {choice.unit:<40} level {choice.level:>2}  {choice.structure:<12} kept {choice.kept}")
    return 0


def _add_apply(sub: Any) -> None:
    p = sub.add_parser(
        "apply",
        help="cut the model as a plan says and save it",
        description="Apply a plan for real: physically remove heads and neurons (Fisher: with mask tuning), "
        "save safetensors + pruned_config.json, reloadable with planner.load_pruned(DIR).",
    )
    _add_model(p)
    p.add_argument("--plan", required=True, help="plan JSON from `planner plan`")
    p.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    _add_task(p)
    p.add_argument("--onnx", action="store_true", help="also export model.onnx for ONNX Runtime")
    _add_gguf(p)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_apply)


def _add_gguf(p: argparse.ArgumentParser) -> None:
    from planner.models.gguf_writer import GGUF_TYPES

    p.add_argument(
        "--gguf",
        nargs="?",
        const="f16",
        default=None,
        choices=GGUF_TYPES,
        help="also write model.gguf for llama.cpp (per-layer shapes; weight type, default f16), kept only after "
        "llama.cpp ran it as the pruned torch model does (gguf_check.json); needs latency-planner[llamacpp]",
    )


def _cmd_apply(args: argparse.Namespace) -> int:
    from planner.workflows import apply_plan

    out = apply_plan(
        _config(args), plan=args.plan, out=args.out, overwrite=args.overwrite, onnx=args.onnx, gguf=args.gguf
    )
    extras = (", model.onnx" if args.onnx else "") + (", model.gguf, gguf_check.json" if args.gguf else "")
    print(f"wrote {out} (model.safetensors, pruned_config.json{extras})")
    return 0


def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="measure a saved pruned model against the dense one on this device")
    p.add_argument("--pruned", required=True, help="folder written by `planner apply` or `planner run` (pruned/)")
    _add_model(p)
    _add_device(p)
    p.add_argument(
        "--allow-mode-mismatch",
        action="store_true",
        help="measure in another --execution mode than the plan's table was measured in",
    )
    p.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from planner.workflows import verify_pruned

    config = _config(args)
    from_plan = args.batch_size is None and args.seq_len is None
    check = verify_pruned(
        config, pruned=args.pruned, shape_from_plan=from_plan, allow_mode_mismatch=args.allow_mode_mismatch
    )
    dense, pruned = check["dense"], check["pruned"]
    speedup = check.speedup("pruned")
    print(
        f"dense {dense.median_ms:.1f} ms (p10 {dense.p10_ms:.1f}, p90 {dense.p90_ms:.1f}) | pruned "
        f"{pruned.median_ms:.1f} ms (p10 {pruned.p10_ms:.1f}, p90 {pruned.p90_ms:.1f}) | measured speedup "
        f"{speedup.value:.2f}x [{speedup.low:.2f}-{speedup.high:.2f}] ({check.runtime} {check.execution}, "
        f"{check.device}, {check.rounds} interleaved rounds)"
    )
    return 0


def _add_recovery(p: Any) -> None:
    _flag(p, "recover_seconds", "recovery (distillation from the dense model) time budget, s (0 = off)", type_=_float)
    _flag(p, "recover_tokens", "recovery budget in training tokens (default: none)", type_=_int)
    _flag(
        p,
        "recover_lr",
        "recovery's peak learning rate (AdamW, warm-up then cosine decay; default: 3e-4 for LMs, 3e-5 for "
        "classification, as measured)",
        type_=_float,
    )
    _flag(
        p,
        "recover_lora",
        "recovery trains rank-R LoRA adapters (peft; merged before timing) instead of every weight: for models whose "
        "full fine-tuning does not fit in memory (0 = full fine-tuning)",
        type_=_int,
    )


def _add_recover(sub: Any) -> None:
    p = sub.add_parser(
        "recover",
        help="distil a saved pruned model from the dense one (quality back, same shapes, same speed)",
        description="Knowledge distillation of a pruned model (from `planner apply` or `planner run`'s pruned/) "
        "from the dense model it was cut from: KL of the output distributions on the task's training split "
        "(never its test or calibration examples), AdamW with warm-up and cosine decay, checkpointed (an "
        "interrupted run resumes), early stop on a validation slice. Writes the recovered model and recovery.json.",
    )
    _add_model(p)
    p.add_argument("--pruned", required=True, help="pruned model folder to recover")
    p.add_argument("--out", required=True, help="folder for the recovered model (must not exist unless --overwrite)")
    _add_task(p)
    _add_recovery(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_recover)


def _cmd_recover(args: argparse.Namespace) -> int:
    from planner.workflows import recover_pruned

    record = recover_pruned(
        _config(args),
        pruned=args.pruned,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    first, last = record.validation[0], record.validation[-1]
    print(
        f"wrote {args.out}: {record.steps} steps, {record.tokens} tokens, {record.seconds:.0f} s ({record.stopped}); "
        f"validation KL {first.kl:.4f} -> {min(p.kl for p in record.validation):.4f} (last {last.kl:.4f})"
    )
    return 0


# ----- run / sweep -----------------------------------------------------------------------------
def _add_run_args(p: Any, *, out: str) -> None:
    """Settings shared by `run` and `sweep`."""
    _add_model(p)
    _add_device(p)
    _add_task(p)
    _flag(
        p,
        "search",
        "evolution (level vectors evolved under the latency budget, multi-step selection), spdy (SPDY's "
        "local search), none (plain DP), or auto (spdy when there is a search budget: it measured better at "
        "equal time)",
    )
    _flag(p, "search_seconds", "search time per plan (0 = plain DP unless --search-evaluations)", type_=_float)
    _flag(p, "search_evaluations", "stop the search after this many candidate evaluations", type_=_int)
    _flag(p, "search_examples", "calibration examples the search scores on (the rest pick the final plan)", type_=_int)
    _flag(
        p,
        "search_objective",
        "what the search and the final pick minimise: kl (divergence from the dense model's outputs; copies its "
        "mistakes too) or ce (the task loss on the calibration labels)",
    )
    _flag(
        p,
        "search_batch",
        "SPDY's candidates per round (default: one per worker; fix it for the same plan with any --workers)",
        type_=_int,
    )
    _flag(p, "executor", "where the search evaluates candidates: local (this process) or ray (Ray actors)")
    _flag(p, "workers", "search workers with --executor ray (default: one per GPU on CUDA, 1 on the CPU)", type_=_int)
    _flag(p, "ray_address", "join this Ray cluster (host:port; default: RAY_ADDRESS, else a local Ray for the run)")
    _flag(p, "verify_rounds", "interleaved rounds when measuring dense vs pruned, at least", type_=_int)
    _add_recovery(p)
    _flag(
        p,
        "max_loss",
        "the most quality a plan may lose, checked on the guard split with its 95%% interval: accuracy points "
        "for classification (1pt), perplexity increase for LMs (20%%) (default: the guard, 5 points / +50%%; a "
        "run that keeps no plan within it exits 3)",
    )
    _flag(
        p,
        "guard_size",
        "examples the quality limit is checked on, which no stage fits or tunes on (default: 512 documents / "
        "64 windows)",
        type_=_int,
    )
    p.add_argument(
        "--accept-noisy",
        dest="accept_noisy",
        action="store_true",
        default=None,
        help="reuse a cached latency table whose timings were noisy (by default it is measured again)",
    )
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true")


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="end to end: profile, score, plan, search, apply, verify (the main job)",
        description="From a model and a speedup goal to a pruned model whose speedup is measured and whose "
        "held-out metric is reported. Defaults: the bundled MiniLM on BBC News, 2x, torch on CPU, batch 32, "
        "seq 128.",
    )
    _add_run_args(p, out="runs/latest")
    _flag(p, "speedup", "target speedup over dense", type_=_float)
    _flag(p, "backend", "fisher or magnitude")
    _flag(p, "solver", "dp (with the search), greedy, uniform or milp")
    _flag(
        p,
        "corrections",
        "re-plans at most when the measured speedup is confidently short or over (0 = off)",
        type_=_int,
    )
    _add_gguf(p)
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from planner.pipeline import run_pipeline
    from planner.report.markdown import summary_text

    config = _config(args)
    if args.gguf is not None:
        from planner.workflows import gguf_preflight

        gguf_preflight(config)
    report = run_pipeline(
        config,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(summary_text(report, args.out))
    if args.gguf is not None:
        from pathlib import Path

        from planner.workflows import export_run_gguf

        print(export_run_gguf(config, Path(args.out) / "pruned", args.gguf))
    if not report.quality.met or report.quality.speedup_within is False:
        from planner.records.quality import QUALITY_LOST_EXIT

        what = report.verdict if not report.quality.met else "no plan within the quality limit gives a speedup"
        print(f"WARNING: {what}: see {args.out}/report.md", file=sys.stderr)
        return QUALITY_LOST_EXIT
    return 0


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="metric/speedup trade-off: planner (each search) vs uniform vs magnitude, with intervals",
        description="For each target speedup: the planner with each search, the uniform allocation (Fisher "
        "scores, same table) and uniform magnitude pruning; all applied, measured interleaved with the dense "
        "model, and evaluated on held-out data. Each method gets its paired difference to uniform with a 95% "
        "bootstrap interval and a win/tie/loss verdict. Writes pareto.csv and pareto.png.",
    )
    p.add_argument("--speedups", type=_float, nargs="+", default=[1.5, 2.0, 3.0])
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="which plans to compare: evolution, spdy, dp, uniform, magnitude, depth (ShortGPT: whole layers by "
        "Block Influence; Llama-family decoders), flap (FLAP: fluctuation scores, one global threshold, bias "
        "compensation) (default: evolution spdy uniform magnitude; uniform, the baseline, is always added)",
    )
    _add_run_args(p, out="runs/sweep")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from planner.sweep import DEFAULT_SWEEP_METHODS, SWEEP_SEARCH_SECONDS, check_methods, run_sweep, sweep_table

    methods = check_methods(args.methods or DEFAULT_SWEEP_METHODS)
    config = _config(args)
    if args.search_seconds is None:
        config = config.replace(search_seconds=SWEEP_SEARCH_SECONDS)
    frame = run_sweep(
        config,
        list(args.speedups),
        methods=methods,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(sweep_table(frame))
    print(f"wrote {args.out}/pareto.csv and {args.out}/pareto.png")
    return 0


# ----- export / report -------------------------------------------------------------------------
def _add_export(sub: Any) -> None:
    from planner.report.exports import EXPORTS

    p = sub.add_parser("export", help="write a plan in another pruner's format")
    p.add_argument("--plan", required=True)
    p.add_argument("--to", required=True, help=f"format: {', '.join(EXPORTS)}")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from planner.report.exports import export_plan

    for path in export_plan(args.plan, args.to, args.out):
        print(f"wrote {path}")
    return 0


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="re-render report.md and the plots of a `planner run` folder")
    p.add_argument("folder")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from planner.report.folder import render_folder

    for path in render_folder(args.folder):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Latency-aware compression planner: measure, plan, prune, verify.",
    )
    parser.add_argument("--version", action="version", version=f"latency-planner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (_add_profile, _add_plan, _add_apply, _add_run, _add_sweep, _add_verify, _add_recover, _add_export)
    for add in (*commands, _add_report):
        add(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from profilers.errors import ProfileError, TableFormatError
    from solvers import InfeasibleBudgetError

    return (PlannerError, ProfileError, TableFormatError, InfeasibleBudgetError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planner`` console command; returns the exit code. The process is left as
    it was found (warning filters, environment)."""
    from planner.process import cli_session

    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    with cli_session(debug=args.debug, progress=not getattr(args, "no_progress", False)):
        try:
            return handler(args)
        except _user_errors() as exc:
            if args.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume from what was measured", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
