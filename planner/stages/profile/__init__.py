"""The profile stage: the model's units x levels -> a measured ``LatencyTable`` on this device.

- ``measure``: ``profile_model`` (every distinct workload timed, interleaved; whole-model anchors;
  checkpointed, resumable);
- ``cache``: tables reused for the same model, grid and measurement, re-validated before trust;
- ``headroom``: how much faster the dense model runs when deployed another way (ONNX Runtime, CUDA
  graphs), measured before any pruning.

May import: records, models, config and the leaves (and ``profilers``); no other stage, no composer.
"""

from planner.stages.profile.cache import ProfiledTable, cached_table
from planner.stages.profile.headroom import measure_headroom
from planner.stages.profile.measure import profile_model

__all__ = ["ProfiledTable", "cached_table", "measure_headroom", "profile_model"]
