"""The files of a recovery run: its checkpoint, and the best weights of its curve on disk.

The checkpoint (student, optimiser, schedule, data position, RNG state, log; no weights of the best
point) is written atomically every ``checkpoint_every`` steps. The best weights so far wait in
``<checkpoint>.best-<step>.pt`` beside it, not in memory (a fifth copy of the model beside the
student's weights, gradients and AdamW's moments); the checkpoint names which one is its best.
"""

from __future__ import annotations

import contextlib
import glob
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.errors import PlannerError
from profilers.atomic import atomic_path

CHECKPOINT_VERSION = 2
"""Format of the checkpoint (2: the best weights in their own files)."""


def save_checkpoint(
    path: Path,
    identity: dict[str, Any],
    student: nn.Module,
    optimiser: torch.optim.Optimizer,
    state: dict[str, Any],
    history: dict[str, list[Any]],
) -> None:
    """Write the checkpoint atomically (a crash leaves the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(
            {
                "identity": identity,
                "student": student.state_dict(),
                "optimiser": optimiser.state_dict(),
                "state": dict(state),
                "history": {k: list(v) for k, v in history.items()},
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )


class BestWeights:
    """The student's best weights so far, on disk: ``<checkpoint>.best-<step>.pt`` beside the checkpoint
    (a resumed run needs the best of the steps before it), or in a temporary folder without one.

    A file stays while the last checkpoint names it; files of later steps than the checkpoint (a crash
    between the two writes) are removed on resume.
    """

    def __init__(self, folder: Path, stem: str, *, checkpointed: bool = True) -> None:
        self.folder, self.stem = folder, stem
        self.kept: set[int] = set()
        self.checkpointed_run = checkpointed
        """Whether checkpoints name best files (else only the newest best is kept)."""

    @classmethod
    @contextlib.contextmanager
    def beside(cls, checkpoint: Path | None) -> Iterator[BestWeights]:
        """Best-weight files beside ``checkpoint`` (left for ``discard_checkpoint``), or in a temporary
        folder removed at the end."""
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            yield cls(checkpoint.parent, checkpoint.name)
            return
        with tempfile.TemporaryDirectory(prefix="planner-recovery-") as folder:
            yield cls(Path(folder), "recovery.pt", checkpointed=False)

    def file(self, step: int) -> Path:
        return self.folder / f"{self.stem}.best-{step}.pt"

    def files(self) -> dict[int, Path]:
        found = {}
        for path in self.folder.glob(f"{glob.escape(self.stem)}.best-*.pt"):
            tail = path.name[len(self.stem) + len(".best-") : -len(".pt")]
            if tail.isdigit():
                found[int(tail)] = path
        return found

    def save(self, student: nn.Module, step: int) -> None:
        """Write the student's weights as the best at ``step`` (atomically); drop bests no checkpoint needs."""
        with atomic_path(self.file(step)) as tmp:
            torch.save(student.state_dict(), tmp)
        self._keep({step, *self.kept} if self.checkpointed_run else {step})

    def checkpointed(self, step: int) -> None:
        """A checkpoint naming the best at ``step`` is written: older best files can go."""
        self._keep({step})

    def resume(self, step: int) -> None:
        """Resuming a checkpoint whose best is at ``step``: that file must exist; later ones go."""
        if not self.file(step).is_file():
            raise PlannerError(
                f"{self.file(step)} (the best weights the recovery checkpoint names) is missing; delete "
                f"{self.folder / self.stem} to start the recovery again."
            )
        self._keep({step})

    def load(self, step: int) -> dict[str, torch.Tensor]:
        loaded: dict[str, torch.Tensor] = torch.load(self.file(step), map_location="cpu", weights_only=True)
        return loaded

    def remove_all(self) -> None:
        """Delete every best-weight file of this checkpoint."""
        self._keep(set())

    def _keep(self, steps: set[int]) -> None:
        for step, path in self.files().items():
            if step not in steps:
                path.unlink(missing_ok=True)
        self.kept = steps


def discard_checkpoint(checkpoint: Path) -> None:
    """Remove a finished recovery's checkpoint and its best-weight files (once its result is saved)."""
    checkpoint.unlink(missing_ok=True)
    BestWeights(checkpoint.parent, checkpoint.name).remove_all()
