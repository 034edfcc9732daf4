"""Checkpoint formats that ``fabric checkpoint consolidate`` turns into a single file.

Sharded strategies write directories (one file per rank, or a DCP directory). A
``CheckpointFormat`` recognises such a directory and writes the equivalent single file
that plain ``torch.load`` reads. Formats are registered through the
``fabric_register_checkpoint_formats`` hook; fabric-core provides ``"dcp"``.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CheckpointFormat", "DCPFormat", "atomic_output"]


class CheckpointFormat(ABC):
    """A kind of checkpoint directory that can be consolidated into one ``torch.save`` file."""

    @staticmethod
    @abstractmethod
    def detect(path: Path) -> bool:
        """Whether ``path`` is a checkpoint of this format (cheap: look at file names only)."""

    @abstractmethod
    def consolidate(self, path: Path, output: Path) -> None:
        """Write the checkpoint at ``path`` as a single file at ``output``."""


class DCPFormat(CheckpointFormat):
    """A ``torch.distributed.checkpoint`` directory, as written by sharded strategies.

    The result holds the same nested dict that was saved (``{"model": ..., "optimizer":
    ..., ...}``) with full, unsharded tensors.
    """

    @staticmethod
    def detect(path: Path) -> bool:
        """DCP directories hold a ``.metadata`` file."""
        return path.is_dir() and (path / ".metadata").is_file()

    def consolidate(self, path: Path, output: Path) -> None:
        """Gather every shard into one ``torch.save`` file (on this process, no process group)."""
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with atomic_output(output) as temporary:
            dcp_to_torch_save(path, temporary)


@contextmanager
def atomic_output(output: Path) -> Iterator[Path]:
    """A temporary path next to ``output``, renamed over it when the block succeeds (removed if not)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
