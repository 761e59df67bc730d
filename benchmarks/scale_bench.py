"""Scale-out of the search on Ray: evaluations per second with 1 and 2 workers, a two-node cluster,
and a simulated scaling curve.

1. MiniLM + BBC News (the default run's shape, batch 32 x 128 tokens), the evolution at 2x: the local
   executor (one process, every core), Ray with 1 worker (every core) and Ray with 2 workers (one core
   each), interleaved round by round (each round a new seed, the same for all three), after a warm-up
   round; median and spread of evaluations per second. Pools are made once (workers load the model
   once), as in a run.
2. The cluster path: `ray start --head` plus a second `ray start --address` on this machine (two
   nodes of one core each, on loopback), the same search with 2 workers through --ray-address.
3. A synthetic evaluation of fixed cost (a sleep of the MiniLM screen's measured cost) on 1 to 64
   workers through the same pool: efficiency = ideal / measured wall time, and the driver's overhead
   per evaluation = (workers x wall - evaluations x cost) / evaluations.

Last line: ``local=<eval/s> local1=<eval/s, one thread> ray1=<eval/s> ray2=<eval/s> ray2_vs_ray1=<x> ray2_vs_local=<x>
cluster2=<eval/s> overhead16_ms=<ms> efficiency16=<x> efficiency64=<x>``.

Run: ``.venv/bin/python benchmarks/scale_bench.py [--rounds 5] [--evaluations 48] [--skip-cluster]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from planner.backends import get_backend
from planner.config import RunConfig
from planner.executors import Executor, ExecutorSettings
from planner.executors.ray_pool import LOOPBACK_ONLY
from planner.pipeline import StageClock, prepare
from planner.stages.score import cached_scores
from planner.stages.search import search_levels


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """A worker that sleeps ``cost_s`` per evaluation (no model)."""

    cost_s: float
    threads: int = 0


class SyntheticWorker:
    def __init__(self, spec: SyntheticSpec) -> None:
        self.cost = spec.cost_s

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "threads": 0}

    def evaluate(self, levels: tuple[int, ...], sample: str, scoring: str) -> np.ndarray:
        time.sleep(self.cost)
        return np.zeros(1)


def search_rate(prepared: Any, backend: Any, scores: Any, settings: Any, pool: Any) -> float:
    """Evaluations per second of one evolution (``settings.evaluations`` candidates)."""
    before = pool.stats.evaluations
    started = time.perf_counter()
    search_levels(
        adapter=prepared.loaded.adapter,
        task=prepared.task,
        table=prepared.table,
        scores=scores,
        backend=backend,
        budget_ms=prepared.table.budget_ms(2.0),
        settings=settings,
        pool=pool,
    )
    return (pool.stats.evaluations - before) / (time.perf_counter() - started)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def measure_workers(config: RunConfig, rounds: int, evaluations: int) -> dict[str, list[float]]:
    prepared = prepare(config, StageClock(), progress=False)
    backend = get_backend("fisher", progress=False)
    scores = cached_scores(backend, prepared.loaded, prepared.task, cache_dir=config.cache_dir)
    base = config.search_settings(calibration=len(prepared.task.calibration), default_examples=64)
    settings = {
        "local": ExecutorSettings("local"),
        "local1": ExecutorSettings("local"),  # one thread: how well one process already uses both cores
        "ray1": ExecutorSettings("ray", 1),
        "ray2": ExecutorSettings("ray", 2),
    }
    rates: dict[str, list[float]] = {name: [] for name in settings}
    threads = torch.get_num_threads()
    for r in range(rounds):
        # A fresh pool per round and executor (the Ray pools' actors cannot all fit on 2 cores at once),
        # warmed up with a short search before the timed one.
        for name, executor_settings in settings.items():
            torch.set_num_threads(1 if name == "local1" else threads)
            with Executor(executor_settings) as executor:
                pool = executor.search_pool(
                    config=config,
                    loaded=prepared.loaded,
                    task=prepared.task,
                    backend=backend,
                    scores=scores,
                    settings=base,
                )
                search_rate(prepared, backend, scores, dataclasses.replace(base, seed=999, evaluations=16), pool)
                rate = search_rate(
                    prepared, backend, scores, dataclasses.replace(base, seed=100 + r, evaluations=evaluations), pool
                )
            rates[name].append(rate)
            print(f"round {r} {name}: {rate:.2f} evaluations/s", file=sys.stderr)
    torch.set_num_threads(threads)
    return rates


def measure_cluster(config: RunConfig, evaluations: int, port: int = 6390) -> float:
    """Evaluations/s with 2 workers on a two-node Ray cluster started here, on loopback addresses
    (head 127.0.0.2, second node 127.0.0.3; Ray rewrites 127.0.0.1 to the machine's network address),
    with token authentication. Runs in a fresh process: this one's Ray is bound to loopback only."""
    env = {k: v for k, v in os.environ.items() if k not in (LOOPBACK_ONLY, "RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "token"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    head = ["--head", "--port", str(port), "--node-ip-address", "127.0.0.2", "--include-dashboard=false"]
    subprocess.run([ray_bin, "start", *head, *common], check=True, env=env, capture_output=True)
    try:
        second = ["--address", f"127.0.0.2:{port}", "--node-ip-address", "127.0.0.3"]
        subprocess.run([ray_bin, "start", *second, *common], check=True, env=env, capture_output=True)
        command = [sys.executable, __file__, "--cluster-only", f"127.0.0.2:{port}", "--evaluations", str(evaluations)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        print(done.stderr[-2000:], file=sys.stderr)
        return float(done.stdout.strip().splitlines()[-1].split("=")[1])
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


def cluster_rate(config: RunConfig, address: str, evaluations: int) -> float:
    """The search on a running cluster through --ray-address, 2 workers (one per node)."""
    cluster = config.replace(executor="ray", workers=2, ray_address=address)
    prepared = prepare(cluster, StageClock(), progress=False)
    backend = get_backend("fisher", progress=False)
    scores = cached_scores(backend, prepared.loaded, prepared.task, cache_dir=cluster.cache_dir)
    base = cluster.search_settings(calibration=len(prepared.task.calibration), default_examples=64)
    with Executor(cluster.executor_settings()) as executor:
        pool = executor.search_pool(
            config=cluster, loaded=prepared.loaded, task=prepared.task, backend=backend, scores=scores, settings=base
        )
        print(f"cluster: {len(pool.where)} workers on {sorted(w['pid'] for w in pool.where)}", file=sys.stderr)
        rates = [
            search_rate(
                prepared, backend, scores, dataclasses.replace(base, seed=200 + r, evaluations=evaluations), pool
            )
            for r in range(3)
        ]
    print(f"cluster: {spread(rates[1:])} evaluations/s (after a warm-up search)", file=sys.stderr)
    return statistics.median(rates[1:])


def measure_synthetic(cost_s: float, counts: list[int]) -> dict[int, tuple[float, float]]:
    """workers -> (efficiency, driver overhead per evaluation in ms) for a sleep of ``cost_s``."""
    from planner.executors.ray_pool import RayConnection, RayPool

    connection = RayConnection(None)
    out = {}
    try:
        for workers in counts:
            pool = RayPool(connection, SyntheticSpec(cost_s), workers, worker=SyntheticWorker)  # type: ignore[arg-type]
            pool.losses([((0,), "s", "plain")] * workers)  # warm-up
            evaluations = max(64, 8 * workers)
            started = time.perf_counter()
            pool.losses([((i,), "s", "plain") for i in range(evaluations)])
            wall = time.perf_counter() - started
            ideal = -(-evaluations // workers) * cost_s
            overhead_ms = 1000 * (workers * wall - evaluations * cost_s) / evaluations
            out[workers] = (ideal / wall, overhead_ms)
            print(
                f"synthetic {workers} workers: efficiency {ideal / wall:.3f}, overhead {overhead_ms:.2f} ms/eval",
                file=sys.stderr,
            )
            pool.close()
    finally:
        connection.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=48)
    parser.add_argument("--cost-ms", type=float, default=None, help="synthetic cost (default: the measured one)")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--synthetic-only", action="store_true", help="only part 3 (needs --cost-ms)")
    parser.add_argument("--cluster-only", metavar="ADDRESS", help="only part 2, on a running cluster")
    args = parser.parse_args()
    if args.cluster_only:
        config = RunConfig(search="evolution", accept_noisy=True)
        print(f"cluster2={cluster_rate(config, args.cluster_only, args.evaluations)}")
        return
    if args.synthetic_only:
        synthetic = measure_synthetic(args.cost_ms / 1000.0, [1, 2, 4, 8, 16, 32, 64])
        print(" ".join(f"efficiency{w}={e:.3f} overhead{w}_ms={o:.2f}" for w, (e, o) in synthetic.items()))
        return
    config = RunConfig(search="evolution", accept_noisy=True)
    cluster = float("nan") if args.skip_cluster else measure_cluster(config, args.evaluations)
    rates = measure_workers(config, args.rounds, args.evaluations)
    for name, values in rates.items():
        print(f"{name}: {spread(values)} evaluations/s", file=sys.stderr)
    ratio = [b / a for a, b in zip(rates["ray1"], rates["ray2"], strict=True)]
    ratio_local = [b / a for a, b in zip(rates["local"], rates["ray2"], strict=True)]
    print(f"ray2 / ray1 per round: {spread(ratio)}; ray2 / local: {spread(ratio_local)}", file=sys.stderr)
    cost = (args.cost_ms or 1000.0 / statistics.median(rates["ray1"])) / 1000.0
    synthetic = measure_synthetic(cost, [1, 2, 4, 8, 16, 32, 64])
    print(
        f"local={statistics.median(rates['local']):.2f} local1={statistics.median(rates['local1']):.2f} "
        f"ray1={statistics.median(rates['ray1']):.2f} "
        f"ray2={statistics.median(rates['ray2']):.2f} ray2_vs_ray1={statistics.median(ratio):.2f} "
        f"ray2_vs_local={statistics.median(ratio_local):.2f} cluster2={cluster:.2f} cost_ms={1000 * cost:.1f} "
        f"overhead16_ms={synthetic[16][1]:.2f} efficiency16={synthetic[16][0]:.3f} efficiency64={synthetic[64][0]:.3f}"
    )


if __name__ == "__main__":
    main()
