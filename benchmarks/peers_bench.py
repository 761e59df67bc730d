"""The sweep's peers on the real SmolLM2, quality side only (no latency table needed):

- depth (ShortGPT): layers removed by Block Influence on the calibration windows, 0..15 of 30,
  held-out perplexity of each (ShortGPT's curve: steep past about a third of the layers);
- FLAP at one global threshold removing about 30% of the MLP neurons and KV groups: held-out
  perplexity with and without its bias compensation (the rest of the plan identical).

Run: ``.venv/bin/python benchmarks/peers_bench.py``; the last line holds the figures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from planner.backends import get_backend
    from planner.backends.compensation import compensated_shrink
    from planner.backends.depth import INFLUENCE
    from planner.backends.flap import elements_kept, z_key
    from planner.models import load_model
    from planner.tasks import build_task
    from solvers import threshold_levels

    torch.set_num_threads(2)
    start = time.perf_counter()
    loaded = load_model("smollm2")
    adapter = loaded.adapter
    with tempfile.TemporaryDirectory() as cache:
        task = build_task(
            loaded, task="causal-lm", data="bbc", seq_len=128, calibration_size=32, batch_size=8, seed=0,
            cache_dir=Path(cache), test_size=32,
        )  # fmt: skip
    dense = task.evaluate(adapter.model).value
    units = adapter.units()

    depth = get_backend("depth").score(adapter, task)
    order = np.argsort(depth.extra[INFLUENCE], kind="stable")
    curve = []
    for removed in (0, 3, 6, 9, 12, 15):
        gone = {int(layer) for layer in order[:removed]}
        keep = {u.name: [] for u in units if u.layer in gone}
        curve.append((removed, task.evaluate(adapter.shrink(keep)).value))
        print(f"depth: {removed:2d} of 30 layers removed (by Block Influence): perplexity {curve[-1][1]:.1f}")

    flap = get_backend("flap")
    scores = flap.score(adapter, task)
    z = [scores.extra[z_key(u.name)] for u in units]
    kept = [np.array([elements_kept(u, level) for level in u.levels]) for u in units]
    threshold = float(np.quantile(np.concatenate(z), 0.3))
    levels = threshold_levels(z, kept, threshold)
    keep = {u.name: list(flap.select(scores, u, u.levels[k])) for u, k in zip(units, levels, strict=True) if k > 0}
    with_bias = task.evaluate(compensated_shrink(adapter, keep, task)).value
    without = task.evaluate(adapter.shrink(keep)).value
    share = 1 - sum(len(k) for k in keep.values()) / sum(u.size for u in units if u.name in keep)
    print(f"flap: cut at z={threshold:.2f} removes {100 * share:.0f}% of the cut units' heads/neurons")
    print(
        f"dense {dense:.1f}; depth curve "
        + ", ".join(f"{r}:{p:.1f}" for r, p in curve)
        + f"; flap with bias compensation {with_bias:.1f}, without {without:.1f}; {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
