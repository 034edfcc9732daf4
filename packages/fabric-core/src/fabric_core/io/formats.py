"""Checkpoint formats: what ``fabric checkpoint inspect`` and ``convert`` read and write.

Sharded strategies write directories (one file per rank, or a DCP directory). A
``CheckpointFormat`` recognises such a directory, describes it, and writes the equivalent
single file that plain ``torch.load`` reads; a format that can also be written from a single
file (``"dcp"``) implements `CheckpointFormat.from_file`. Formats are registered
through the ``fabric_register_checkpoint_formats`` hook; fabric-core provides ``"dcp"``.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fabric_core.io import diagnose
from fabric_core.io.atomic import atomic_directory, atomic_file
from fabric_core.io.detection import detect_format
from fabric_core.io.summary import CheckpointSummary, TensorInfo, describe_file, disk_usage

__all__ = ["CheckpointFormat", "DCPFormat", "atomic_output", "detect_format"]


class CheckpointFormat(ABC):
    """A kind of checkpoint directory that can be consolidated into one ``torch.save`` file."""

    @staticmethod
    @abstractmethod
    def detect(path: Path) -> bool:
        """Whether ``path`` is a checkpoint of this format (cheap: look at file names only)."""

    @abstractmethod
    def consolidate(self, path: Path, output: Path) -> None:
        """Write the checkpoint at ``path`` as a single file at ``output``."""

    def describe(self, path: Path) -> CheckpointSummary:
        """What the checkpoint at ``path`` holds (``fabric checkpoint inspect``).

        This default consolidates it into a temporary file and describes that, which reads
        every tensor; formats with metadata override it to read only the metadata.
        """
        with tempfile.TemporaryDirectory(prefix="fabric-inspect-") as scratch:
            single = Path(scratch) / "consolidated.pt"
            self.consolidate(Path(path), single)
            summary = describe_file(single)
        files, size = disk_usage(Path(path))
        return replace(summary, path=str(path), files=files, disk_bytes=size)

    def from_file(self, source: Path, output: Path) -> None:
        """Write the single ``torch.save`` file ``source`` as a checkpoint of this format at ``output``.

        Raises:
            NotImplementedError: This format cannot be written from a single file.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be written from a single file.")


_DCP_FILE = re.compile(r"^__(\d+)_\d+\.distcp$")


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
        """Gather every shard into one ``torch.save`` file (on this process, no process group).

        Index-keyed optimizer state (``{"state": {0: ...}, "param_groups": ...}``, as a
        single file holds it) comes back with integer keys, which DCP stores as strings.
        Pickled entries are unpickled as DCP does (not ``weights_only``): consolidate only
        checkpoints you trust.

        Raises:
            ValueError: The metadata is unreadable, or a shard file it names is missing.
        """
        import torch
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        metadata = self._metadata(Path(path))
        self._check_files(Path(path), metadata)
        planner_data = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
        indexed = any(_has_optimizer_index(entry_path) for entry_path in planner_data.values())
        with atomic_output(output) as temporary:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp_to_torch_save(path, temporary)
            if indexed:  # read whole (not mapped: the file is rewritten), as dcp_to_torch_save holds it
                state = torch.load(temporary, weights_only=False)
                if _restore_optimizer_indices(state):
                    torch.save(state, temporary)

    def describe(self, path: Path) -> CheckpointSummary:
        """Read the metadata only (``FileSystemReader.read_metadata``), never the tensors."""
        metadata = self._metadata(Path(path))
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        tensors: list[TensorInfo] = []
        objects: list[tuple[str, str]] = []
        for name, storage in metadata.state_dict_metadata.items():
            if isinstance(storage, TensorStorageMetadata):
                dtype = storage.properties.dtype
                shape = tuple(storage.size)
                tensors.append(
                    TensorInfo(
                        name, str(dtype).removeprefix("torch."), shape, storage.size.numel() * dtype.itemsize
                    )
                )
            else:
                objects.append((name, "<pickled>"))
        ranks = {int(m.group(1)) for m in map(_DCP_FILE.match, self._shard_files(metadata)) if m}
        files, size = disk_usage(Path(path))
        return CheckpointSummary(
            path=str(path),
            format="dcp",
            description="a torch.distributed.checkpoint directory, sharded",
            tensors=tuple(tensors),
            objects=tuple(objects),
            world_size=len(ranks) or None,
            files=files,
            disk_bytes=size,
            notes=("read from .metadata only; values of other entries are pickled in the shards",),
        )

    def from_file(self, source: Path, output: Path) -> None:
        """Write a ``torch.save`` file as a DCP directory (one process, no process group).

        Like ``torch.distributed.checkpoint.format_utils.torch_save_to_dcp``, but the file is
        read with ``weights_only=True`` and the directory appears at ``output`` only once complete.
        """
        import torch.distributed.checkpoint as dcp

        from fabric_core.io.checkpoint_io import read_checkpoint_file

        state = read_checkpoint_file(source)
        diagnose.check_save_target(output, directory=True)
        diagnose.make_parent(output)
        with atomic_directory(Path(output)) as partial, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, storage_writer=dcp.FileSystemWriter(partial), no_dist=True)

    @staticmethod
    def _metadata(path: Path) -> Any:
        from torch.distributed.checkpoint import FileSystemReader

        try:
            return FileSystemReader(path).read_metadata()
        except Exception as error:  # any unpickling failure means the same thing here
            raise ValueError(
                f"'{path / '.metadata'}' cannot be read ({type(error).__name__}: {error}): it is damaged, or not "
                "written by torch.distributed.checkpoint. Use another checkpoint, or save this one again."
            ) from error

    @staticmethod
    def _shard_files(metadata: Any) -> set[str]:
        storage = metadata.storage_data if isinstance(metadata.storage_data, dict) else {}
        return {info.relative_path for info in storage.values()}

    def _check_files(self, path: Path, metadata: Any) -> None:
        missing = sorted(name for name in self._shard_files(metadata) if not (path / name).is_file())
        if missing:
            raise ValueError(
                f"The checkpoint '{path}' is incomplete: its metadata names shard files that are not there "
                f"({', '.join(missing[:5])}). Copy every file of the directory (every host's, for a multi-node "
                "save), or use another checkpoint."
            )


def _has_optimizer_index(entry_path: Any) -> bool:
    """Whether a DCP entry path runs through ``state.<digits>`` (an index-keyed optimizer state)."""
    parts = list(entry_path) if isinstance(entry_path, (list, tuple)) else []
    return any(a == "state" and isinstance(b, str) and b.isdigit() for a, b in itertools.pairwise(parts))


def _restore_optimizer_indices(state: Any) -> bool:
    """Turn the string keys of index-keyed optimizer states back into ints, in place; whether any changed."""
    changed = False
    if isinstance(state, dict):
        groups = state.get("param_groups")
        inner = state.get("state")
        if (
            isinstance(groups, list)
            and isinstance(inner, dict)
            and all(
                isinstance(g, dict) and all(isinstance(p, int) for p in g.get("params", [])) for g in groups
            )
            and inner
            and all(isinstance(key, str) and key.isdigit() for key in inner)
        ):
            state["state"] = {int(key): value for key, value in inner.items()}
            changed = True
        for value in state.values():
            changed = _restore_optimizer_indices(value) or changed
    return changed


@contextmanager
def atomic_output(output: Path) -> Iterator[Path]:
    """A temporary path next to ``output``, renamed over it when the block succeeds (removed if not).

    The checks and messages of a checkpoint save apply: a directory in the way, a parent
    that is a file, a read-only directory, a full disk.
    """
    output = Path(output)
    diagnose.check_save_target(output)
    diagnose.make_parent(output)
    try:
        with atomic_file(output) as temporary:
            yield temporary
    except OSError as error:
        clear = diagnose.save_error(error, output)
        if clear is None:
            raise
        raise clear from error
