"""The frozen records passed between stages (each saved as a plain file with a schema version).

profile -> ``LatencyTable`` (``profilers.table``; table.csv + table.json)
score   -> ``ErrorTable`` (``.npz``)
solve   -> ``Plan`` (plan.json, ``planner/schemas/plan.schema.json``)
verify  -> ``Verification`` (paired end-to-end timings)
report  -> ``Report`` (report.json, ``planner/schemas/report.schema.json``)
"""

from planner.records.error_table import ErrorTable
from planner.records.plan import Plan, UnitChoice
from planner.records.report import Report
from planner.records.verification import ModelTiming, SpeedupEstimate, Verification, target_met
from profilers.table import LatencyTable

__all__ = [
    "ErrorTable",
    "LatencyTable",
    "ModelTiming",
    "Plan",
    "Report",
    "SpeedupEstimate",
    "UnitChoice",
    "Verification",
    "target_met",
]
