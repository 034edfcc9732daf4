"""Resuming from the latest checkpoint: keep the last few, find the newest, load it.

A job restarted by ``fabric run --max-restarts N``, requeued by SLURM or resubmitted after
a preemption runs the same script again; with `CheckpointManager` the script picks
up at the step it last saved::

    from fabric_core.utilities.checkpoint_manager import CheckpointManager

    manager = CheckpointManager("checkpoints", keep=3)
    state = {"model": model, "optimizer": optimizer}
    start = manager.load(fabric, state) or 0  # the step saved last; None (so 0) on the first run
    for step in range(start, steps):
        ...  # the training step
        if (step + 1) % 100 == 0:
            manager.save(fabric, state, step + 1)

Checkpoints are written by ``fabric.save`` (atomically: a save killed halfway leaves the
previous ones loadable) as ``step-<step>.ckpt`` in the directory, which every rank must see
(a shared file system when there are several nodes).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["CheckpointManager"]

_NAME = re.compile(r"step-(\d+)\.ckpt")


class CheckpointManager:
    """Saves checkpoints by step into one directory, keeps the last ``keep``, and resumes from the newest.

    Args:
        directory: Where the checkpoints go (created on the first save).
        keep: How many checkpoints to keep; older ones are deleted after each save.

    Raises:
        ValueError: ``keep`` is not a positive integer.
    """

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(
                f"CheckpointManager(keep={keep!r}): keep must be a whole number of checkpoints, at least 1."
            )
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` is (or would be) saved."""
        return self.directory / f"step-{step:09d}.ckpt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """The complete checkpoints in the directory as ``(step, path)``, oldest first.

        ``fabric.save`` gives a checkpoint its name only when it is complete, so a
        half-written one (a hidden temporary file) is not listed.
        """
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _NAME.fullmatch(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest checkpoint's path, or ``None`` when there is none."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, fabric: Fabric, state: dict[str, Any], step: int) -> Path:
        """Save ``state`` as the checkpoint of ``step`` (on every rank), then delete all but the last ``keep``.

        Returns:
            The checkpoint's path.

        Raises:
            ValueError: ``step`` is not a non-negative integer.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(
                f"CheckpointManager.save(step={step!r}): step must be a whole number, 0 or more."
            )
        path = self.path(step)
        if fabric.is_global_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
        fabric.barrier()
        # A checkpoint of this step saved before (by an attempt restarted after it) is
        # replaced atomically by fabric.save: until the new one is complete, the old one stays.
        fabric.save(path, state)
        if fabric.is_global_zero:
            for _, old in self.checkpoints()[: -self.keep]:
                _remove(old)
        fabric.barrier()
        return path

    def load(self, fabric: Fabric, state: dict[str, Any], strict: bool = True) -> int | None:
        """Load the newest checkpoint into ``state`` (as ``fabric.load`` does) and return its step.

        Global rank 0 chooses the checkpoint and tells the others, so every rank loads the same
        one. Returns ``None``, loading nothing, when the directory holds no checkpoint.
        """
        found = self.checkpoints()
        name = found[-1][1].name if found else None
        if fabric.world_size > 1:
            name = fabric.broadcast(name, src=0)
        if name is None:
            return None
        fabric.load(self.directory / name, state, strict=strict)
        match = _NAME.fullmatch(name)
        assert match is not None
        return int(match.group(1))

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep})"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
