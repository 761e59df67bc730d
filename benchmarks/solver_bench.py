"""Solver benchmark: DP vs exact MILP (HiGHS) on random non-monotone instances.

For L = 24, 72 and 224 units with 40 levels each and 10,000 buckets: DP time (median of repeats),
MILP time on continuous costs, and the DP objective's gap to the MILP optimum. Three random
instances per size, targets at 2x. Last line:
``dp_ms_L224=<x> milp_ms_L224=<y> max_gap_pct=<z>``.

Run: ``.venv/bin/python benchmarks/solver_bench.py``
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from solvers import solve_dp, solve_milp

LEVELS = 40
BUCKETS = 10_000
INSTANCES = 3
DP_REPEATS = 5


def instance(rng: np.random.Generator, units: int) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Costs fall with the level but with +-20% noise (non-monotone); errors rise convexly."""
    costs, errors = [], []
    for _ in range(units):
        trend = np.linspace(1.0, 0.05, LEVELS) * rng.uniform(0.5, 2.0)
        costs.append(trend * (1.0 + 0.2 * rng.uniform(-1.0, 1.0, LEVELS)))
        errors.append(np.sort(rng.uniform(0.0, 1.0, LEVELS)) ** 2 * rng.uniform(0.1, 3.0))
    budget = 0.5 * sum(float(c[0]) for c in costs)
    return costs, errors, budget


def main() -> None:
    rng = np.random.default_rng(0)
    solve_dp(*instance(rng, 8))  # warm-up (imports, allocator)
    summary: dict[int, tuple[float, float]] = {}
    gaps = []
    print(f"{'L':>4} {'inst':>4} {'dp_ms':>8} {'milp_ms':>9} {'ratio':>6} {'gap_pct':>8} {'dp_cost<=budget':>15}")
    for units in (24, 72, 224):
        dp_times, milp_times = [], []
        for index in range(INSTANCES):
            costs, errors, budget = instance(rng, units)
            runs = []
            for _ in range(DP_REPEATS):
                start = time.perf_counter()
                solution = solve_dp(costs, errors, budget, buckets=BUCKETS)
                runs.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            exact = solve_milp(costs, errors, budget)
            milp_ms = (time.perf_counter() - start) * 1e3
            dp_ms = statistics.median(runs)
            gap = 100.0 * (solution.error - exact.error) / exact.error
            gaps.append(gap)
            dp_times.append(dp_ms)
            milp_times.append(milp_ms)
            print(
                f"{units:>4} {index:>4} {dp_ms:>8.1f} {milp_ms:>9.1f} {milp_ms / dp_ms:>6.1f} "
                f"{gap:>8.3f} {solution.cost_ms <= budget!s:>15}"
            )
        summary[units] = (statistics.median(dp_times), statistics.median(milp_times))
    dp224, milp224 = summary[224]
    print(f"dp_ms_L224={dp224:.1f} milp_ms_L224={milp224:.1f} max_gap_pct={max(gaps):.3f}")


if __name__ == "__main__":
    main()
