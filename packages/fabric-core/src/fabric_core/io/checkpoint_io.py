"""Writing and reading checkpoint files, atomically and safely."""

from __future__ import annotations

import os
import shutil
import stat
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any

import torch

from fabric_core.io import diagnose
from fabric_core.io.atomic import atomic_file

__all__ = ["CheckpointIO", "TorchCheckpointIO", "read_checkpoint_file"]


class CheckpointIO(ABC):
    """Moves a checkpoint (a dict of tensors and plain objects) to and from storage.

    A strategy decides *what* goes into a checkpoint; a ``CheckpointIO`` decides *how*
    the bytes are stored. Pass an instance as ``Fabric(plugins=[...])`` to change it.
    """

    @abstractmethod
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path``."""

    @abstractmethod
    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path``."""

    @abstractmethod
    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete the checkpoint at ``path``."""

    def teardown(self) -> None:
        """Release resources (open handles, thread pools)."""


class TorchCheckpointIO(CheckpointIO):
    """Stores checkpoints with ``torch.save`` / ``torch.load``.

    Saving writes to a temporary file in the target directory (``.<name>.fabric-<host>-<pid>-
    <token>.tmp``, with the umask's permissions), flushes it to disk and renames it over the
    target, so a crash, a kill or an error mid-write leaves the previous checkpoint intact
    and never a half-written file under the target's name. The next save to the directory
    removes what a killed save left (see `fabric_core.io.atomic`). Loading uses
    ``weights_only=True`` unless told otherwise, which refuses to run code hidden in a pickle.

    Every mistake gets one message that says what to do (see `fabric_core.io.diagnose`):
    a read-only directory, a full disk, a directory or a file in the way, an object pickle
    cannot store (named by its place in the state); a missing, empty, truncated, corrupted
    or foreign file.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Atomically write ``checkpoint`` to ``path``, creating parent directories.

        A ``path`` that exists and is not a regular file (``/dev/null``, a FIFO) is written
        in place: there is nothing to replace atomically.

        Raises:
            TypeError: ``storage_options`` was given (this I/O has none), or the checkpoint
                holds an object that pickle cannot store.
            IsADirectoryError, NotADirectoryError: A directory is at ``path``, or a file is
                where a parent directory should be.
            PermissionError: The directory is read-only.
            OSError: The disk is full (``errno.ENOSPC``).
        """
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}. "
                "Pass a CheckpointIO that supports them in Fabric(plugins=[...])."
            )
        path = Path(path)
        diagnose.check_save_target(path)
        diagnose.make_parent(path)
        try:
            if path.exists() and not stat.S_ISREG(path.stat().st_mode):
                with open(path, "wb") as file:
                    self._write(checkpoint, file)
            else:
                with atomic_file(path) as temporary, open(temporary, "wb") as file:
                    self._write(checkpoint, file)
        except Exception as error:
            clear = diagnose.save_error(error, path, checkpoint)
            if clear is None:
                raise
            raise clear from error

    def _write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Serialise ``checkpoint`` into the open ``file`` (``torch.save``)."""
        torch.save(checkpoint, file)
        file.flush()

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path``.

        Args:
            path: The file written by `save_checkpoint` (or any ``torch.save`` file).
            map_location: Where tensors are loaded (``"cpu"`` by default).
            weights_only: Refuse arbitrary pickled objects (default ``True``). Pass ``False``
                only for checkpoints you trust.

        Raises:
            FileNotFoundError: ``path`` does not exist (the message says what exists).
            IsADirectoryError: ``path`` is a directory (a sharded checkpoint, or none).
            ValueError: The file is empty, truncated, corrupted or not a checkpoint, or holds
                objects that ``weights_only`` loading refuses.
        """
        return read_checkpoint_file(path, map_location, weights_only)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete a checkpoint file or directory if it exists."""
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def read_checkpoint_file(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    weights_only: bool | None = None,
    mmap: bool = False,
) -> Any:
    """``torch.load`` of one checkpoint file, with one clear error for each way it can fail.

    ``mmap=True`` maps the file instead of reading it (tensor bytes are read when used);
    it needs the zip format of ``torch.save`` (since torch 1.6) and falls back to reading
    older files. Errors as `TorchCheckpointIO.load_checkpoint`.
    """
    path = Path(path)
    if not path.exists():
        raise diagnose.missing_checkpoint(path)
    if path.is_dir():
        raise diagnose.directory_error(path)
    safe = True if weights_only is None else weights_only
    try:
        if path.stat().st_size == 0:
            raise EOFError("empty file")
        try:
            return torch.load(path, map_location=map_location, weights_only=safe, mmap=mmap)
        except RuntimeError as error:
            if not mmap or "mmap" not in str(error):
                raise
            return torch.load(path, map_location=map_location, weights_only=safe)
    except Exception as error:
        clear = diagnose.load_error(error, path, safe)
        if clear is None:
            raise
        raise clear from error
