"""Writing and reading checkpoint files, atomically and safely."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointIO", "TorchCheckpointIO"]


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

    Saving writes to a temporary file in the target directory, flushes it to disk and
    renames it over the target, so a crash or an error mid-write leaves the previous
    checkpoint intact and never a half-written file. Loading uses ``weights_only=True``
    unless told otherwise, which refuses to run code hidden in a pickle.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Atomically write ``checkpoint`` to ``path``, creating parent directories.

        Raises:
            TypeError: ``storage_options`` was given (this I/O has none).
        """
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}. "
                "Pass a CheckpointIO that supports them in Fabric(plugins=[...])."
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path``.

        Args:
            path: The file written by :meth:`save_checkpoint` (or any ``torch.save`` file).
            map_location: Where tensors are loaded (``"cpu"`` by default).
            weights_only: Refuse arbitrary pickled objects (default ``True``). Pass ``False``
                only for checkpoints you trust.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: The file holds objects that ``weights_only`` loading refuses.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No checkpoint at '{path}'.")
        if path.is_dir():
            raise IsADirectoryError(
                f"'{path}' is a directory, but this strategy reads single-file checkpoints. A directory is "
                "a sharded (distributed) checkpoint: load it with the strategy that wrote it, or consolidate "
                "it first with `fabric checkpoint consolidate`."
            )
        weights_only = True if weights_only is None else weights_only
        try:
            return torch.load(path, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as error:
            if not weights_only:
                raise
            raise ValueError(
                f"The checkpoint '{path}' holds objects that safe loading (weights_only=True) refuses: "
                f"{str(error).splitlines()[0]} If you trust the file, load it with weights_only=False."
            ) from error

    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete a checkpoint file or directory if it exists."""
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
