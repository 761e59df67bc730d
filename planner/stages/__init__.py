"""The stages of a run, in the order data flows through them; each one a function with explicit
inputs that leaves a frozen record:

- ``load``: the configured model and task (data, calibration and test splits);
- ``profile``: the latency table on this device (``measure``), its cache, and the runtime headroom;
- ``score``: the backend's error table (unit x level -> estimated loss), cached;
- ``search``: per-unit levels chosen by evaluating whole models, the final pick, and the candidate-pool
  interface that executors implement;
- ``solve``: table + errors + target -> a validated ``Plan``;
- ``apply``: the pruned model's files (save, load, ONNX); the cut itself is the backend's;
- ``recover``: distillation from the dense model (checkpoints, LoRA);
- ``verify``: dense vs pruned latency, paired and interleaved;
- ``correct``: re-planning toward the target when the measurement says so, and what stands in the way.

A stage imports records, models, tasks, backends, report, config and the leaves (and ``profilers`` and
``solvers``); never another stage, never executors or the composers (``planner.pipeline``,
``planner.sweep``, ``planner.workflows``, ``planner.cli``). ``tests/test_layers.py`` keeps it so.
"""
