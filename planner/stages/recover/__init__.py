"""The recover stage: knowledge distillation of a pruned model from the dense one.

- ``distil``: the training loop (``recover``), its loss, schedule and log (``RecoveryLog``);
- ``files``: its checkpoint and the best weights of its curve on disk (resume, clean-up);
- ``lora``: LoRA adapters for recovery in less memory, merged before anything is timed.

Settings come as ``planner.config.RecoverySettings``. May import: records, models, tasks, config and
the leaves; no other stage, no composer.
"""

from planner.config.settings import RecoverySettings
from planner.stages.recover.distil import (
    CurvePoint,
    RecoveryLog,
    distillation_loss,
    learning_rate,
    recover,
    split_training,
    validation_kl,
)
from planner.stages.recover.files import discard_checkpoint

__all__ = [
    "CurvePoint",
    "RecoveryLog",
    "RecoverySettings",
    "discard_checkpoint",
    "distillation_loss",
    "learning_rate",
    "recover",
    "split_training",
    "validation_kl",
]
