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


def _add_profile(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a per-unit latency table on this device",
        description="Measure the latency of every prunable unit at every candidate level, plus the dense "
        "model end to end, on this device and runtime at the given input shape.",
    )
    p.add_argument(
        "--model", default="minilm", help="'minilm' (bundled), a Hugging Face folder, or package.module:factory"
    )
    p.add_argument("--runtime", default="torch", help="torch or onnxruntime (default: torch)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default: float32)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--seq-len", type=_positive_int, default=128)
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--rounds", type=_positive_int, default=10, help="timed samples per workload (default: 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per workload (default: 1)")
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
        model=args.model,
        runtime=args.runtime,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        threads=args.threads or 0,
        rounds=args.rounds,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Latency-aware compression planner: measure, plan, prune, verify.",
    )
    parser.add_argument("--version", action="version", version=f"latency-planner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_profile(sub)
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
