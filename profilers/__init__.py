"""On-device profilers: measured latency tables for prunable units at candidate levels.

Works on ``nn.Module`` workloads and tables; never imports ``planner``.
"""

from profilers.errors import ProfileError, TableFormatError
from profilers.profiler import Measured, Profiler, ProfilerSettings, Workload
from profilers.runtimes import RUNTIMES, get_runtime
from profilers.smoothing import non_increasing_fit
from profilers.table import COLUMNS, SCHEMA_VERSION, LatencyTable, TableMetadata
from profilers.timing import TimingStats

__all__ = [
    "COLUMNS",
    "RUNTIMES",
    "SCHEMA_VERSION",
    "LatencyTable",
    "Measured",
    "ProfileError",
    "Profiler",
    "ProfilerSettings",
    "TableFormatError",
    "TableMetadata",
    "TimingStats",
    "Workload",
    "get_runtime",
    "non_increasing_fit",
]
