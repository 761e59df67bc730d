"""``planner`` command line: a thin shell over the Python API (one public function per command).

Errors from bad input print one line (``error: ...``) and exit with code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.version import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, got {value}")
    return value


def _add_device_args(p: Any, *, dtype: bool = True, threads: bool = True, shape_default: bool = True) -> None:
    """--model/--runtime/--device/--dtype/--batch-size/--seq-len/--threads/--rounds, shared by commands."""
    p.add_argument(
        "--model", default="minilm", help="'minilm' (bundled), a Hugging Face BERT folder, or pkg.mod:factory"
    )
    p.add_argument("--runtime", default="torch", help="torch or onnxruntime (default: torch)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    if dtype:
        p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default: float32)")
    where = "" if shape_default else " (default: the plan's)"
    p.add_argument("--batch-size", type=_positive_int, default=32 if shape_default else None, help=where or None)
    p.add_argument("--seq-len", type=_positive_int, default=128 if shape_default else None, help=where or None)
    if threads:
        p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--rounds", type=_positive_int, default=10, help="timed samples per workload (default: 10)")


def _device_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The settings added by ``_add_device_args``, as keyword arguments of the config records."""
    return {
        "model": args.model,
        "runtime": args.runtime,
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "threads": args.threads or 0,
        "rounds": args.rounds,
    }


def _add_profile(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a per-unit latency table on this device",
        description="Measure the latency of every prunable unit at every candidate level, plus the dense "
        "model end to end, on this device and runtime at the given input shape.",
    )
    _add_device_args(p)
    p.add_argument("--warmup", type=int, default=0, help="extra untimed calls per workload (default: 0)")
    p.add_argument(
        "--ffn-step", type=_positive_int, default=None, help="FFN neuron grid step (default: about 25 levels)"
    )
    p.add_argument(
        "--sparsity-levels", type=_positive_int, default=None, help="generic layers: sparsity levels (default: 12)"
    )
    p.add_argument("--smooth", action="store_true", help="fit non-increasing curves to heads/neurons (raw values kept)")
    p.add_argument("--out", required=True, help="CSV path; a JSON sidecar with the metadata is written beside it")
    p.add_argument("--force", action="store_true", help="re-measure even if --out holds a matching table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from planner.profile import ProfileConfig, profile_model

    config = ProfileConfig(
        **_device_kwargs(args),
        warmup=args.warmup,
        ffn_step=args.ffn_step,
        sparsity_levels=args.sparsity_levels,
        smoothing="monotone" if args.smooth else "none",
    )
    out = Path(args.out)
    existed = out.exists() and not args.force
    table = profile_model(config, out=out, progress=not args.no_progress, reuse=not args.force)
    print(("reused " if existed else "wrote ") + f"{out} (+ {out.with_suffix('.json').name})")
    print(table.summary())
    return 0


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="choose per-unit levels that meet a speedup on a measured table",
        description="Turn a latency table (measured on the target device) and locally computed error scores "
        "into a plan: one level per unit meeting the speedup with the least estimated loss.",
    )
    p.add_argument("--table", required=True, help="latency table CSV from `planner profile` (on the target device)")
    p.add_argument("--speedup", type=_positive_float, required=True, help="target speedup over the dense model, > 1")
    p.add_argument("--model", default="minilm", help="the model the table was measured for")
    p.add_argument("--backend", default="fisher", help="fisher (needs --data) or magnitude (default: fisher)")
    p.add_argument("--solver", default="dp", help="dp, greedy, uniform or milp (default: dp)")
    p.add_argument("--data", default="bbc", help="labelled data for Fisher: 'bbc' or a <class>/*.txt folder")
    p.add_argument("--calibration-size", type=_positive_int, default=256, help="calibration examples (<= 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force-table", action="store_true", help="use a table measured for other weights, same shapes")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from planner.workflows import create_plan

    plan = create_plan(
        model=args.model,
        table=args.table,
        speedup=args.speedup,
        backend=args.backend,
        solver=args.solver,
        data=args.data,
        calibration_size=args.calibration_size,
        seed=args.seed,
        force_table=args.force_table,
        out=args.out,
    )
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
    p.add_argument("--model", default="minilm")
    p.add_argument("--plan", required=True, help="plan JSON from `planner plan`")
    p.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--data", default="bbc", help="labelled data for Fisher mask tuning and the task head")
    p.add_argument("--calibration-size", type=_positive_int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--onnx", action="store_true", help="also export model.onnx for ONNX Runtime")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_apply)


def _cmd_apply(args: argparse.Namespace) -> int:
    from planner.workflows import apply_plan

    out = apply_plan(
        model=args.model,
        plan=args.plan,
        out=args.out,
        data=args.data,
        calibration_size=args.calibration_size,
        seed=args.seed,
        overwrite=args.overwrite,
        onnx=args.onnx,
    )
    print(f"wrote {out} (model.safetensors, pruned_config.json{', model.onnx' if args.onnx else ''})")
    return 0


def _add_task_args(p: Any, *, search_seconds: float, out: str) -> None:
    """Settings shared by `run` and `sweep`: device and shape, task data, search, output folder."""
    _add_device_args(p)
    p.add_argument("--data", default="bbc", help="'bbc' (bundled BBC News) or a folder of <class>/*.txt files")
    p.add_argument(
        "--search-seconds",
        type=float,
        default=search_seconds,
        help=f"local search time per plan (default: {search_seconds:g}; 0 = plain DP)",
    )
    p.add_argument("--calibration-size", type=_positive_int, default=256, help="calibration documents (<= 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true")


def _run_config(args: argparse.Namespace, **extra: Any) -> Any:
    """A ``RunConfig`` from the arguments added by ``_add_task_args`` (plus command-specific ones)."""
    from planner.pipeline import RunConfig

    return RunConfig(
        **_device_kwargs(args),
        data=args.data,
        search_seconds=args.search_seconds,
        search_examples=min(64, args.calibration_size),
        calibration_size=args.calibration_size,
        verify_rounds=args.rounds,
        seed=args.seed,
        **extra,
    )


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="end to end: profile, score, plan, search, apply, verify (the main job)",
        description="From a model and a speedup goal to a pruned model whose speedup is measured and whose "
        "accuracy is reported. Defaults: the bundled MiniLM on BBC News, 2x, torch on CPU, batch 32, seq 128.",
    )
    _add_task_args(p, search_seconds=60.0, out="runs/latest")
    p.add_argument("--speedup", type=_positive_float, default=2.0, help="target speedup over dense (default: 2.0)")
    p.add_argument("--backend", default="fisher", help="fisher (default) or magnitude")
    p.add_argument("--solver", default="dp", help="dp (default, with local search), greedy, uniform or milp")
    p.add_argument(
        "--corrections",
        type=int,
        default=1,
        help="re-plans when the measured speedup is more than 3%% below the target (default: 1; 0 = off)",
    )
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from planner.pipeline import run_pipeline

    config = _run_config(
        args, speedup=args.speedup, backend=args.backend, solver=args.solver, corrections=args.corrections
    )
    report = run_pipeline(
        config,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(summary_text(report, args.out))
    return 0


def summary_text(report: dict[str, Any], out: str) -> str:
    """The one-screen summary printed at the end of ``planner run``."""
    r = report
    verdict = "met" if r["measured_speedup"] >= 0.95 * r["target_speedup"] else "MISSED (see report.md)"
    return "\n".join(
        [
            f"{r['model']} on {r['device']} ({r['device_name']}), {r['runtime']}, "
            f"batch {r['batch_size']} x seq {r['seq_len']}",
            f"  speedup   target {r['target_speedup']:.2f}x | predicted {r['predicted_speedup']:.2f}x | "
            f"measured {r['measured_speedup']:.2f}x  -> {verdict}",
            f"  latency   dense {r['dense_ms']:.1f} ms -> pruned {r['pruned_ms']:.1f} ms "
            f"(p10-p90 {r['pruned_p10_ms']:.1f}-{r['pruned_p90_ms']:.1f})",
            f"  accuracy  dense {100 * r['dense_accuracy']:.2f}% -> pruned {100 * r['pruned_accuracy']:.2f}% "
            f"({100 * (r['pruned_accuracy'] - r['dense_accuracy']):+.2f} points)",
            f"  kept      heads {r['heads_kept']}  neurons {r['neurons_kept']}",
            "  seconds   " + ", ".join(f"{k} {v:.0f}" for k, v in r["stage_seconds"].items()),
            f"  wrote     {out}/ (report.md, report.json, plan.json, table.csv, pruned/, *.png)",
        ]
    )


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="accuracy/speedup trade-off: planner vs uniform vs magnitude at several targets",
        description="For each target speedup: the planner (Fisher, DP + search), uniform allocation with the "
        "same backend and table, and the planner with magnitude scores; all applied, measured interleaved "
        "with the dense model, and evaluated. Writes pareto.csv and pareto.png.",
    )
    p.add_argument("--speedups", type=_positive_float, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 4.0])
    _add_task_args(p, search_seconds=30.0, out="runs/sweep")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from planner.pipeline import run_sweep

    config = _run_config(args)
    frame = run_sweep(
        config,
        list(args.speedups),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    columns = ["method", "target_speedup", "predicted_speedup", "measured_speedup", "accuracy"]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}/pareto.csv and {args.out}/pareto.png")
    return 0


def _add_export(sub: Any) -> None:
    from planner.exports import EXPORTS

    p = sub.add_parser("export", help="write a plan in another pruner's format")
    p.add_argument("--plan", required=True)
    p.add_argument("--to", required=True, help=f"format: {', '.join(EXPORTS)}")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from planner.exports import export_plan

    for path in export_plan(args.plan, args.to, args.out):
        print(f"wrote {path}")
    return 0


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="re-render report.md and the plots of a `planner run` folder")
    p.add_argument("folder")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from planner.pipeline import render_folder

    for path in render_folder(args.folder):
        print(f"wrote {path}")
    return 0


def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="measure a saved pruned model against the dense one on this device")
    p.add_argument("--pruned", required=True, help="folder written by `planner apply` or `planner run` (pruned/)")
    _add_device_args(p, dtype=False, threads=False, shape_default=False)
    p.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from planner.verify import verify_pruned

    check = verify_pruned(
        model=args.model,
        pruned=args.pruned,
        runtime=args.runtime,
        device=args.device,
        rounds=args.rounds,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
    )
    print(
        f"dense {check.dense_ms:.1f} ms (p10 {check.dense_p10_ms:.1f}, p90 {check.dense_p90_ms:.1f}) | pruned "
        f"{check.pruned_ms:.1f} ms (p10 {check.pruned_p10_ms:.1f}, p90 {check.pruned_p90_ms:.1f}) | measured speedup "
        f"{check.measured_speedup:.2f}x ({args.runtime}, {args.device}, {check.rounds} interleaved rounds)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Latency-aware compression planner: measure, plan, prune, verify.",
    )
    parser.add_argument("--version", action="version", version=f"latency-planner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_profile(sub)
    _add_plan(sub)
    _add_apply(sub)
    _add_run(sub)
    _add_sweep(sub)
    _add_verify(sub)
    _add_export(sub)
    _add_report(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from profilers.errors import ProfileError, TableFormatError
    from solvers import InfeasibleBudgetError

    return (PlannerError, ProfileError, TableFormatError, InfeasibleBudgetError, FileNotFoundError)


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planner`` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    if not args.debug:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.showwarning = _one_line_warning
    if getattr(args, "no_progress", False):
        os.environ["PLANNER_NO_PROGRESS"] = "1"
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
