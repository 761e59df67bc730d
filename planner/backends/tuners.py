"""Which model family's mask tuning runs for an adapter: a registry keyed by adapter type, and
``tune_and_fold`` (tune the kept units' scales on calibration data, fold them into a copy).

The shared maths and folding live in ``tuning``; each family's least-squares gathering in
``tuning_bert`` / ``tuning_decoder``, which import ``tuning`` and never this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from planner.backends.tuning import Tuned, fold_scales
from planner.tasks.base import Task

Tuner = Callable[..., Tuned]
"""``tuner(adapter, keep, task, *, teacher_keep, intercept, target, progress) -> Tuned``."""


def _tuners() -> dict[type, Tuner]:
    from planner.backends.tuning_bert import tune_bert
    from planner.models.bert import BertAdapter

    tuners: dict[type, Tuner] = {BertAdapter: tune_bert}
    try:
        from planner.backends.tuning_decoder import tune_decoder
        from planner.models.decoder import DecoderAdapter
    except ImportError:  # pragma: no cover - decoders are part of the package
        return tuners
    tuners[DecoderAdapter] = tune_decoder
    return tuners


def tuning_targets(adapter: Any) -> tuple[str, ...]:
    """What the family's mask tuning can fit each block to, its default first: ``"stream"`` (the
    family's own rule: the teacher's residual stream where the blocks add to it unnormed) and, for
    pre-norm decoders, ``"block"`` (the dense block's own output; ``planner.backends.tuning_decoder``).
    Empty for families without tuning."""
    from planner.backends.tuning_decoder import tuning_targets as decoder_targets
    from planner.models.bert import BertAdapter
    from planner.models.decoder import DecoderAdapter

    if isinstance(adapter, DecoderAdapter):
        return decoder_targets(adapter)
    return ("stream",) if isinstance(adapter, BertAdapter) else ()


def tune_and_fold(
    adapter: Any,
    keep: Mapping[str, Sequence[int]],
    task: Task,
    *,
    teacher_keep: Mapping[str, Sequence[int]] | None = None,
    intercept: bool = False,
    target: str = "stream",
    progress: bool = False,
) -> Any:
    """Tune scales for ``keep`` on the task's calibration data and fold them into a copy
    (``intercept``: each output projection's bias is fitted with the scales, FLAP's compensation;
    ``target``: what each block is fitted to, see ``tuning_targets``).

    Returns:
        An adapter over the tuned copy (the caller's adapter and model are untouched).
    """
    for cls, tuner in _tuners().items():
        if isinstance(adapter, cls):
            tuned = tuner(
                adapter, keep, task, teacher_keep=teacher_keep, intercept=intercept, target=target, progress=progress
            )
            return fold_scales(adapter, tuned)
    raise TypeError(f"no mask tuning for {type(adapter).__name__}; families with tuning: BERT, decoders")
