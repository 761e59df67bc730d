"""A readable ``report.md`` from ``report.json``: predicted vs measured vs target, accuracy, costs."""

from __future__ import annotations

from typing import Any


def render_report(report: dict[str, Any]) -> str:
    """Markdown summary of one run (the figures also shown on screen at the end of ``planner run``)."""
    r = report
    lines = [
        f"# Pruning report: {r['model']} at {r['target_speedup']:g}x ({r['backend']}, {r['solver']})",
        "",
        f"Device: {r['device']} ({r['device_name']}), runtime {r['runtime']}, {r['dtype']}, batch {r['batch_size']} "
        f"x seq {r['seq_len']}, {r['threads']} threads.",
        "",
        "| | target | predicted | measured |",
        "|---|---|---|---|",
        f"| speedup | {r['target_speedup']:.2f}x | {r['predicted_speedup']:.2f}x | {r['measured_speedup']:.2f}x |",
        f"| pruned latency (ms) | {r['dense_ms'] / r['target_speedup']:.1f} | {r['predicted_ms']:.1f} | "
        f"{r['pruned_ms']:.1f} (p10 {r['pruned_p10_ms']:.1f}, p90 {r['pruned_p90_ms']:.1f}) |",
        f"| dense latency (ms) | | {r['dense_predicted_ms']:.1f} | {r['dense_ms']:.1f} (p10 {r['dense_p10_ms']:.1f}, "
        f"p90 {r['dense_p90_ms']:.1f}) |",
        "",
        f"Test accuracy: dense {100 * r['dense_accuracy']:.2f}%, pruned {100 * r['pruned_accuracy']:.2f}% "
        f"({100 * (r['pruned_accuracy'] - r['dense_accuracy']):+.2f} points).",
        "",
        f"Heads kept per layer: {r['heads_kept']}; FFN neurons kept per layer: {r['neurons_kept']}.",
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items()) + ".",
    ]
    if len(r.get("attempts", [])) > 1:
        steps = "; ".join(
            f"planned for {a['planned_for']:.2f}x, predicted {a['predicted_speedup']:.2f}x, measured "
            f"{a['measured_speedup']:.2f}x"
            for a in r["attempts"]
        )
        lines += ["", f"Corrected after measuring (the table over-promised): {steps}."]
    if r.get("search"):
        s = r["search"]
        lines += [
            "",
            f"Local search: {s['evaluations']} evaluations, calibration loss {s['start_loss']:.4f} -> "
            f"{s['best_loss']:.4f} (stopped: {s['stopped']}).",
        ]
        if s.get("selection"):
            pick = s["selection"]
            scored = ", ".join(f"{c['source']} {c['loss']:.4f}" for c in pick["contenders"])
            lines.append(
                f"Final pick on {pick['examples']} held-out calibration documents: {pick['chosen']} ({scored})."
            )
    lines += [
        "",
        "Measured speedups are dense vs pruned end-to-end latency, timed interleaved in one process on the "
        "same runtime; the prediction comes from the latency table (`table.csv`).",
        "",
        "![latency table](latency_table.png) ![allocation](allocation.png) "
        "![predicted vs measured](predicted_vs_measured.png)"
        + (" ![search](search_history.png)" if r.get("search") else ""),
        "",
    ]
    return "\n".join(lines)
