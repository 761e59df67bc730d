"""The apply stage's files: a pruned model saved, loaded back and exported to deployable formats.

The cut itself is the backend's (``planner.backends``: ``backend.apply(adapter, plan, task)``);
``choose`` applies each recipe a backend offers and keeps the model closest to the dense one on
held-out training examples. This package writes what it gives: the project's own folder
(``pruned_io``: ``model.safetensors`` + ``pruned_config.json``, per-unit shapes) and ONNX for encoders.

May import: records, models, tasks, backends, config and the leaves; no other stage, no composer.
"""

from planner.stages.apply.pruned_io import backbone_of, base_config, export_onnx_model, load_pruned, save_pruned

__all__ = ["backbone_of", "base_config", "export_onnx_model", "load_pruned", "save_pruned"]
