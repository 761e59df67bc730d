"""Plot data computed apart from drawing: ``*_frame(...) -> DataFrame`` (tested) and
``plot_*(frame, ax=None) -> Axes`` (matplotlib, imported only when drawing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.records.plan import Plan
from profilers import LatencyTable


def latency_frame(table: LatencyTable) -> pd.DataFrame:
    """One row per (signature, level): kind, fraction kept, planning and raw latency (ms).

    Units sharing a signature share measurements, so each shape is listed once.
    """
    f = table.frame
    first = f.drop_duplicates(subset=["signature", "level"]).copy()
    sizes = {str(k): float(v) for k, v in first[first["level"] == 0].set_index("signature")["kept"].items()}
    fractions = []
    for signature, kept, sparsity in zip(first["signature"], first["kept"], first["sparsity"], strict=True):
        size = sizes.get(str(signature), float("nan"))
        if pd.notna(kept) and size > 0:
            fractions.append(float(kept) / size)
        else:
            fractions.append(1.0 - (0.0 if pd.isna(sparsity) else float(sparsity)))
    first["fraction_kept"] = fractions
    return first[
        [
            "signature",
            "kind",
            "level",
            "structure",
            "kept",
            "fraction_kept",
            "latency_ms",
            "raw_ms",
            "p10_ms",
            "p90_ms",
            "impl",
        ]
    ].reset_index(drop=True)


def allocation_frame(plan: Plan) -> pd.DataFrame:
    """One row per unit: kind, layer, kept, size, fraction kept (structured plans)."""
    rows = []
    for choice in plan.units:
        size = choice.size
        kept = choice.kept if choice.kept is not None else size
        rows.append(
            {
                "unit": choice.unit,
                "kind": choice.kind,
                "layer": choice.layer,
                "kept": kept,
                "size": size,
                "fraction_kept": (kept / size) if kept is not None and size else 1.0 - (choice.sparsity or 0.0),
                "latency_ms": choice.latency_ms,
            }
        )
    return pd.DataFrame(rows)


def prediction_frame(points: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows of {label, predicted_ms, measured_ms, measured_p10_ms, measured_p90_ms} plus the error (%)."""
    frame = pd.DataFrame(list(points))
    frame["error_pct"] = 100.0 * (frame["predicted_ms"] / frame["measured_ms"] - 1.0)
    return frame


def search_frame(history: Sequence[Any]) -> pd.DataFrame:
    """The search's history: SPDY (``SearchStep``s): one row per real evaluation (evaluation, phase,
    loss, best loss, seconds); evolution (``Generation``s): one row per generation (generation,
    evaluations so far as ``evaluation``, best loss at each selection step ``step<i>_best``, the
    parent's loss as ``best_loss``, improved, seconds)."""
    if history and hasattr(history[0], "generation"):
        rows = []
        for g in history:
            row: dict[str, Any] = {"generation": g.generation, "evaluation": g.evaluations}
            row.update({f"step{i}_best": loss for i, loss in enumerate(g.step_best)})
            row.update({"best_loss": g.parent_loss, "improved": g.improved, "seconds": g.seconds})
            rows.append(row)
        return pd.DataFrame(rows)
    return pd.DataFrame(
        [
            {
                "evaluation": s.evaluation,
                "phase": s.phase,
                "loss": s.loss,
                "best_loss": s.best_loss,
                "seconds": s.seconds,
            }
            for s in history
        ],
        columns=["evaluation", "phase", "loss", "best_loss", "seconds"],
    )


def pareto_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Sweep rows {method, target_speedup, measured_speedup, metric_name, metric, ...} sorted for plotting."""
    return pd.DataFrame(list(rows)).sort_values(["method", "target_speedup"]).reset_index(drop=True)


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots(figsize=(7, 4.5))
    return new_ax


def plot_latency(frame: pd.DataFrame, ax: Any = None) -> Any:
    """Latency (ms) of every level against the fraction kept, one line per unit shape."""
    ax = _axes(ax)
    for (_, kind), rows in frame.groupby(["signature", "kind"], sort=False):
        rows = rows.sort_values("fraction_kept")
        line = ax.plot(rows["fraction_kept"], rows["latency_ms"], marker="o", ms=3, label=f"{kind} (planned)")[0]
        if (rows["raw_ms"] != rows["latency_ms"]).any():
            ax.plot(rows["fraction_kept"], rows["raw_ms"], ls="--", color=line.get_color(), label=f"{kind} (raw)")
        ax.fill_between(rows["fraction_kept"], rows["p10_ms"], rows["p90_ms"], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("fraction of heads / neurons kept")
    ax.set_ylabel("latency per unit (ms)")
    ax.set_title("Measured latency table (p10-p90 band)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_allocation(frame: pd.DataFrame, ax: Any = None) -> Any:
    """Fraction of heads and neurons kept per layer (grouped bars)."""
    ax = _axes(ax)
    kinds = list(dict.fromkeys(frame["kind"]))
    width = 0.8 / max(1, len(kinds))
    for i, kind in enumerate(kinds):
        rows = frame[frame["kind"] == kind]
        xs = rows["layer"].to_numpy(dtype=float) + (i - (len(kinds) - 1) / 2) * width
        bars = ax.bar(xs, rows["fraction_kept"], width=width, label=kind)
        for bar, kept in zip(bars, rows["kept"], strict=True):
            ax.annotate(
                str(kept), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
            )
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction kept")
    ax.set_ylim(0, 1.12)
    ax.set_title("Per-layer allocation (numbers: units kept)")
    ax.legend(fontsize=8)
    return ax


def plot_prediction(frame: pd.DataFrame, ax: Any = None) -> Any:
    """Predicted vs measured end-to-end latency (ms) with the y = x line and measured p10-p90."""
    ax = _axes(ax)
    lo = float(min(frame["predicted_ms"].min(), frame["measured_ms"].min())) * 0.9
    hi = float(max(frame["predicted_ms"].max(), frame["measured_ms"].max())) * 1.1
    ax.plot([lo, hi], [lo, hi], color="gray", ls="--", label="y = x")
    yerr = [frame["measured_ms"] - frame["measured_p10_ms"], frame["measured_p90_ms"] - frame["measured_ms"]]
    ax.errorbar(frame["predicted_ms"], frame["measured_ms"], yerr=yerr, fmt="o", capsize=3, label="models")
    for row in frame.itertuples():
        ax.annotate(
            f"{row.label} ({row.error_pct:+.1f}%)",
            (row.predicted_ms, row.measured_ms),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title("Predicted vs measured end-to-end latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_search(frame: pd.DataFrame, ax: Any = None) -> Any:
    """Search loss against evaluations: every evaluated plan and the best so far (SPDY), or each
    selection step's best and the parent (evolution)."""
    ax = _axes(ax)
    if "generation" in frame:
        steps = sorted(c for c in frame.columns if c.startswith("step") and c.endswith("_best"))
        for i, column in enumerate(steps[:-1]):
            ax.scatter(frame["evaluation"], frame[column], s=8, alpha=0.5, label=f"best offspring, step {i + 1}")
        ax.plot(frame["evaluation"], frame["best_loss"], color="C3", label="parent (largest sample)")
        ax.set_title("Evolutionary search history")
    else:
        ax.scatter(frame["evaluation"], frame["loss"], s=8, alpha=0.5, label="candidate")
        ax.plot(frame["evaluation"], frame["best_loss"], color="C3", label="best so far")
        ax.set_title("Local search history")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("search loss on calibration examples")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_pareto(frame: pd.DataFrame, ax: Any = None, *, dense_metric: float | None = None) -> Any:
    """The held-out metric against measured speedup, one line per method, with 95% intervals on both
    axes where the frame has them (``speedup_low/high``, ``metric_low/high``). Plans made for a
    baseline's measured speed (``matched_to``) are hollow markers. When the frame has ``heldout_kl`` and no
    ``ax`` is given, a second panel draws the held-out KL to the dense model. Returns the metric axes."""
    if ax is None and "heldout_kl" in frame:
        import matplotlib.pyplot as plt

        _, (ax, kl_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    else:
        ax, kl_ax = _axes(ax), None
    name = str(frame["metric_name"].iloc[0]) if "metric_name" in frame and len(frame) else "accuracy"
    scale = 100.0 if name == "accuracy" else 1.0
    if dense_metric is None and "dense_metric" in frame and len(frame):
        dense_metric = float(frame["dense_metric"].iloc[0])
    matched = (
        frame["matched_to"].fillna("").astype(str) != "" if "matched_to" in frame else pd.Series(False, frame.index)
    )
    for i, (method, rows) in enumerate(frame.groupby("method", sort=False)):
        color = f"C{i}"
        for axes, column, factor in ((ax, "metric", scale), (kl_ax, "heldout_kl", 1.0)):
            if axes is None:
                continue
            for hollow in (False, True):
                part = rows[matched.loc[rows.index] == hollow].sort_values("measured_speedup")
                if part.empty:
                    continue
                x, y = part["measured_speedup"], factor * part[column]
                xerr = _error_bars(part, "measured_speedup", "speedup_low", "speedup_high")
                yerr = _error_bars(part, column, "metric_low", "metric_high", factor) if column == "metric" else None
                label = f"{method} (at a baseline's speed)" if hollow else str(method)
                axes.errorbar(
                    x,
                    y,
                    xerr=xerr,
                    yerr=yerr,
                    color=color,
                    marker="o",
                    ls=":" if hollow else "-",
                    mfc="none" if hollow else color,
                    capsize=3,
                    label=label,
                )
    if dense_metric is not None:
        ax.axhline(scale * dense_metric, color="gray", ls="--", label="dense")
        ax.plot([1.0], [scale * dense_metric], marker="*", ms=12, color="gray")
    ax.set_xlabel("measured speedup (x)")
    ax.set_ylabel("test accuracy (%)" if name == "accuracy" else f"held-out {name}")
    ax.set_title(f"{name.capitalize()} / speedup trade-off (95% intervals)")
    if name == "perplexity":  # spans orders of magnitude once a model breaks
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if kl_ax is not None:
        kl_ax.set_xlabel("measured speedup (x)")
        kl_ax.set_ylabel("held-out KL to the dense model")
        kl_ax.set_title("Held-out KL (examples no search saw)")
        kl_ax.grid(alpha=0.3)
    return ax


def _error_bars(rows: pd.DataFrame, value: str, low: str, high: str, factor: float = 1.0) -> np.ndarray | None:
    """(2, n) distances from ``value`` to its interval, for ``errorbar``; None without interval columns."""
    if low not in rows or high not in rows:
        return None
    v = factor * rows[value].to_numpy(dtype=float)
    lows = factor * rows[low].to_numpy(dtype=float)
    highs = factor * rows[high].to_numpy(dtype=float)
    return np.vstack([np.clip(v - lows, 0, None), np.clip(highs - v, 0, None)])


def recovery_frame(validation: Sequence[Any]) -> pd.DataFrame:
    """The recovery curve: one row per evaluation (step, tokens, seconds, kl)."""
    rows = [dict(p) if isinstance(p, dict) else dataclasses.asdict(p) for p in validation]
    return pd.DataFrame(rows, columns=["step", "tokens", "seconds", "kl"])


def plot_recovery(frame: pd.DataFrame, ax: Any = None) -> Any:
    """Validation KL to the dense model against training tokens (seconds on the top axis)."""
    ax = _axes(ax)
    ax.plot(frame["tokens"], frame["kl"], marker="o", color="C0")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation KL to the dense model")
    ax.set_title("Recovery by distillation")
    if len(frame) > 1 and frame["tokens"].iloc[-1] > 0:
        rate = float(frame["seconds"].iloc[-1]) / float(frame["tokens"].iloc[-1])
        top = ax.secondary_xaxis("top", functions=(lambda t: t * rate, lambda s: s / rate))
        top.set_xlabel("seconds")
    return ax


def save_figure(ax: Any, path: str | Path) -> list[Path]:
    """Save the axes' figure as PNG and SVG (same stem), atomically; closes the figure."""
    import matplotlib.pyplot as plt

    from profilers.atomic import atomic_path

    out = []
    figure = ax.get_figure()
    figure.tight_layout()
    for suffix in (".png", ".svg"):
        target = Path(path).with_suffix(suffix)
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format=suffix[1:], dpi=120)
        out.append(target)
    plt.close(figure)
    return out
