"""A readable ``report.md`` and the CLI summary, both from the ``Report`` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.config.quality import QualityLimit
from planner.records.report import MetricSummary, Report
from planner.records.settling import DenseSettling


def metric_text(metric: MetricSummary) -> str:
    """ "dense 96.85% -> pruned 96.62% (-0.23 points)" or "dense 28.1 -> pruned 31.4 (+11.7%)"."""
    if metric.name == "accuracy":
        return (
            f"dense {100 * metric.dense:.2f}% -> pruned {100 * metric.pruned:.2f}% ({100 * metric.change:+.2f} points)"
        )
    relative = 100 * (metric.pruned / metric.dense - 1) if metric.dense else float("nan")
    return f"dense {metric.dense:.2f} -> pruned {metric.pruned:.2f} ({relative:+.1f}%)"


def phase_text(report: Report) -> str:
    if report.phase == "generate":
        return f"a reply of {report.generate_tokens} tokens (prefill + {report.generate_tokens} decode steps)"
    return f"{report.phase} phase"


def verdict(report: Report) -> str:
    """The verdict as shown: speed and quality together; anything but "met" points at report.md."""
    return "met" if report.verdict == "met" else f"{report.verdict.upper()} (see report.md)"


def quality_text(report: Report) -> str:
    """E.g. "lost 0.23 points on the test set, 0.41 [0.0, 1.2] on 512 guard documents (limit 1 point,
    --max-loss): kept"."""
    q = report.quality
    allowed = QualityLimit(q.kind, q.limit, q.explicit)
    amount = allowed.amount
    lost = f"{amount(q.loss)} {allowed.unit} on the test set"
    if q.guard_loss is not None and q.guard_low is not None and q.guard_high is not None:
        lost += (
            f", {amount(q.guard_loss)} [{amount(q.guard_low)}, {amount(q.guard_high)}] on {q.guard_examples} guard "
            "examples"
        )
    limit = f"{q.limit:g} points" if q.kind == "points" else f"+{100 * q.limit:g}%"
    source = "--max-loss" if q.explicit else "the default guard"
    return f"lost {lost} (limit {limit}, {source}): {'kept' if q.met else 'QUALITY LOST'}"


def headroom_text(report: Report) -> str:
    """The runtime headroom, first: "headroom: torch cuda-graphs alone: 3.20x over torch eager ..."."""
    h = report.headroom or {}
    line = (
        f"headroom: {h['alternative']} alone runs the dense model {float(h['speedup']):.2f}x as fast as "
        f"{h['reference']} at this shape"
    )
    if float(h["speedup"]) >= report.target_speedup:
        line += f": that meets the {report.target_speedup:g}x target before any pruning"
    return line


def recovery_text(report: Report) -> str:
    """E.g. "120 steps, 491,520 tokens, 600 s (seconds): dense 43.87 / pruned 115.80 / recovered 71.20"."""
    rec = report.recovery or {}
    m = report.metric
    scale = 100.0 if m.name == "accuracy" else 1.0
    unit = "%" if m.name == "accuracy" else ""
    return (
        f"{rec['steps']} steps, {rec['tokens']:,} tokens, {float(rec['seconds']):.0f} s ({rec['stopped']}): "
        f"{m.name} dense {scale * m.dense:.2f}{unit} / pruned {scale * float(rec['pruned_metric']):.2f}{unit} / "
        f"recovered {scale * m.pruned:.2f}{unit}"
    )


def settling_text(settling: Mapping[str, Any]) -> str:
    """How the dense time the plans were predicted with was settled before planning (one sentence), from
    ``report.json``'s ``dense_settling``."""
    text = DenseSettling.from_dict(settling).text()
    return f"{text[0].upper()}{text[1:]}."


def summary_text(report: Report, out: str) -> str:
    """The one-screen summary printed at the end of ``planner run``."""
    r = report
    kept = f"heads {list(r.heads_kept)}  neurons {list(r.neurons_kept)}"
    if any(g != h for g, h in zip(r.groups_kept, r.heads_kept, strict=False)):
        kept = f"KV groups {list(r.groups_kept)}  " + kept
    first = [headroom_text(r)] if r.headroom is not None else []
    return "\n".join(
        [
            *first,
            f"{r.model} on {r.device} ({r.device_name}), {r.runtime} ({r.execution}), batch {r.batch_size} x seq "
            f"{r.seq_len}, {phase_text(r)}",
            f"  speedup   target {r.target_speedup:.2f}x | predicted {r.predicted_speedup:.2f}x | "
            f"measured {r.measured_speedup:.2f}x [{r.speedup_low:.2f}-{r.speedup_high:.2f}]  -> {verdict(r)}",
            f"  latency   dense {r.dense_ms:.1f} ms -> pruned {r.pruned_ms:.1f} ms "
            f"(p10-p90 {r.pruned_p10_ms:.1f}-{r.pruned_p90_ms:.1f})",
            f"  {r.metric.name:<9} {metric_text(r.metric)}",
            f"  quality   {quality_text(r)}",
            *([f"  recovery  {recovery_text(r)}"] if r.recovery is not None else []),
            f"  kept      {kept}",
            "  seconds   " + ", ".join(f"{k} {v:.0f}" for k, v in r.stage_seconds.items()),
            f"  wrote     {out}/ (report.md, report.json, plan.json, table.csv, pruned/, *.png)",
        ]
    )


def render_report(report: Report) -> str:
    """Markdown summary of one run (the figures also shown on screen at the end of ``planner run``)."""
    r = report
    m = r.metric
    examples = f"{m.examples} held-out examples" + (f", {m.tokens} tokens" if m.name == "perplexity" else "")
    if r.runtime != "torch":  # timed in another runtime; the quality figures are always the torch model's
        examples += f"; computed by the pruned torch model, which the {r.runtime} model is built from"
    lines = [
        f"# Pruning report: {r.model} at {r.target_speedup:g}x ({r.backend}, {r.solver})",
        "",
        *([headroom_text(r).capitalize() + ".", ""] if r.headroom is not None else []),
        f"Device: {r.device} ({r.device_name}), runtime {r.runtime} ({r.execution}), {r.dtype}, batch "
        f"{r.batch_size} x seq {r.seq_len}, {phase_text(r)}, {r.threads} threads. Task: {r.task} on {r.data}.",
        "",
        "| | target | predicted | measured |",
        "|---|---|---|---|",
        f"| speedup | {r.target_speedup:.2f}x | {r.predicted_speedup:.2f}x | {r.measured_speedup:.2f}x "
        f"(95% interval {r.speedup_low:.2f}-{r.speedup_high:.2f}) |",
        f"| pruned latency (ms) | {r.dense_ms / r.target_speedup:.1f} | {r.predicted_ms:.1f} | "
        f"{r.pruned_ms:.1f} (p10 {r.pruned_p10_ms:.1f}, p90 {r.pruned_p90_ms:.1f}) |",
        f"| dense latency (ms) | | {r.dense_predicted_ms:.1f} | {r.dense_ms:.1f} (p10 {r.dense_p10_ms:.1f}, "
        f"p90 {r.dense_p90_ms:.1f}) |",
        *([settling_text(r.dense_settling), ""] if r.dense_settling is not None else []),
        "",
        f"Verdict: {r.verdict}.",
        "",
        f"Held-out {m.name} ({examples}): {metric_text(m)}; {quality_text(r)}.",
        "",
        f"Heads kept per layer: {list(r.heads_kept)}; FFN neurons kept per layer: {list(r.neurons_kept)}.",
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r.stage_seconds.items()) + ".",
    ]
    if len(r.attempts) > 1:
        steps = "; ".join(
            f"planned for {a.planned_for:.2f}x, predicted {a.predicted_speedup:.2f}x, measured "
            f"{a.measured_speedup:.2f}x [{a.measured_low:.2f}-{a.measured_high:.2f}]"
            + (f" ({a.recipe})" if a.recipe else "")
            for a in r.attempts
        )
        lines += ["", f"Corrected after measuring: {steps}."]
    elif r.attempts and r.attempts[0].recipe:
        lines += [
            "",
            f"Applied with {r.attempts[0].recipe}: the backend's recipe closest to the dense model on "
            "held-out training examples.",
        ]
    if r.search is not None:
        s = r.search
        lines += [
            "",
            f"Search ({s.method}): {s.evaluations} evaluations in {s.seconds:.0f} s, calibration loss "
            f"{s.start_loss:.4f} -> {s.best_loss:.4f} (stopped: {s.stopped}"
            + (f", {s.generations} generations" if s.generations is not None else "")
            + ")."
            + (f" Stage time: {s.time_text}." if s.time_text else ""),
        ]
        if s.cost and "build_seconds" in s.cost:
            c = s.cost
            lines.append(
                f"Search cost: {c['examples']:.0f} examples scored; {c['build_seconds']:.1f} s building candidates, "
                f"{c['forward_seconds']:.1f} s in forward passes ({100 * c['build_share']:.0f}% building)."
            )
        if s.executor is not None:
            lines.append(f"Candidates evaluated: {s.executor_text}.")
        scoring = s.scoring or {}
        seeds = scoring.get("seed_losses")
        if seeds:
            each = ", ".join(f"{name} {loss:.4f}" for name, loss in seeds.items())
            lines.append(
                f"Candidates were built as {scoring['chosen']} (the seeds' lowest loss under each way the "
                f"backend's recipes fill units: {each}); the final pick scored each contender every way."
            )
        if s.selection is not None:
            pick = s.selection
            scored = ", ".join(
                f"{c.source} {c.loss:.4f}" + (f" as {c.scoring}" if seeds and c.scoring else "")
                for c in pick.contenders
            )
            lines.append(f"Final pick on {pick.examples} held-out calibration examples: {pick.chosen} ({scored}).")
            if pick.versus_uniform is not None:
                v = pick.versus_uniform
                tested = v.get("examples")
                where = (
                    f"on {tested} examples (the search's too: it ranked neither)"
                    if tested is not None and tested > pick.examples
                    else "there"
                )
                lines.append(
                    f"{v['source']} minus uniform {where}: {v['difference']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]; "
                    + ("not a confident win, so uniform was kept." if v["kept_uniform"] else "a confident win.")
                )
    if r.recovery is not None:
        curve = ", ".join(f"{p['tokens']:,} tokens {p['kl']:.4f}" for p in r.recovery["validation"])
        lines += [
            "",
            f"Recovery (distillation from the dense model): {recovery_text(r)}. Validation KL to the dense model "
            f"on held-out training examples: {curve}. ![recovery](recovery.png)",
        ]
    for note in r.notes:
        lines += ["", f"Note: {note}"]
    lines += [
        "",
        "Measured speedups are paired: dense and pruned timed in alternation in one process on the same runtime, "
        "the speedup is the median of per-round ratios with a 95% interval; the prediction comes from the latency "
        "table (`table.csv`).",
        "",
        "![latency table](latency_table.png) ![allocation](allocation.png) "
        "![predicted vs measured](predicted_vs_measured.png)" + (" ![search](search_history.png)" if r.search else ""),
        "",
    ]
    return "\n".join(lines)
