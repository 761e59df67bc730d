"""A latency table's layer shells as the solvers' couplings (``solvers.coupling``).

Solvers that take couplings (the DP, the SPDY search, depth) see the exact cost of skipping a layer;
every other solver plans against ``LatencyTable.additive_budget_ms``, every shell charged.
"""

from __future__ import annotations

import solvers
from profilers import LatencyTable


def couplings(table: LatencyTable) -> list[solvers.Coupling]:
    """One coupling per skippable layer of ``table`` (empty for tables without layer shells)."""
    shell = table.meta.layer_shell_ms
    return [solvers.Coupling(a, la, b, lb, shell) for a, la, b, lb in table.skip_pairs_indexed()]
