"""The load stage: the configured model (at the configured shape and level grid) and the configured
task (data, calibration and test splits, seed).

These two read a ``RunConfig`` directly: they are where its model and data settings become the
``LoadedModel`` and ``Task`` that every other stage receives. Used by the composers and by the Ray
workers, which rebuild the same model and task from the same configuration.
"""

from __future__ import annotations

from planner.config import RunConfig
from planner.models import LoadedModel, load_model
from planner.tasks import Task, build_task


def load_configured(config: RunConfig) -> LoadedModel:
    """The configured model, at the configured shape and level grid."""
    return load_model(
        config.model,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        ffn_step=config.ffn_step,
        sparsity_levels=config.sparsity_levels,
        cache_dir=config.cache_dir,
        random_weights=config.random_weights,
    )


def configured_task(config: RunConfig, loaded: LoadedModel, *, seq_len: int | None = None) -> Task:
    """The configured task (data, calibration size, seed) for ``loaded`` at ``seq_len`` tokens."""
    return build_task(
        loaded,
        task=config.task,
        data=config.data,
        seq_len=config.seq_len if seq_len is None else seq_len,
        calibration_size=config.calibration_size,
        batch_size=config.batch_size,
        seed=config.seed,
        cache_dir=config.cache_dir,
        test_size=config.test_size,
        guard_size=config.guard_size,
    )
