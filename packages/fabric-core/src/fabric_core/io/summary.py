"""What a checkpoint holds, without loading it: the answer of ``fabric checkpoint inspect``.

A `CheckpointSummary` lists every tensor (name, dtype, shape, bytes) and every other
entry of a checkpoint, with its format and, where the checkpoint records them, the strategy
and world size that wrote it. `describe_file` reads a single ``torch.save`` file
memory-mapped, so tensor bytes are not read; `CheckpointFormat`
subclasses describe directories.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric_core.io.diagnose import format_bytes

__all__ = ["CheckpointSummary", "TensorInfo", "describe_file", "disk_usage", "format_bytes", "summarize"]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint: its flattened name (``"model.layer1.weight"``), dtype, shape and bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint holds.

    Attributes:
        path: The checkpoint file or directory.
        format: ``"file"`` for one ``torch.save`` file, else the registered format name
            (``"dcp"``, ``"deepspeed"``, ``"xla_fsdp"``).
        description: The format in words.
        strategy: The strategy that wrote it, where the checkpoint records it.
        world_size: The number of processes that wrote it, where the layout tells.
        tensors: Every tensor, in the checkpoint's order.
        objects: ``(name, value)`` of the entries that are not tensors (the value shortened).
        files: How many files the checkpoint has.
        disk_bytes: How many bytes they take.
        notes: Anything else worth knowing (what was not read, and why).
    """

    path: str
    format: str
    description: str
    tensors: tuple[TensorInfo, ...]
    objects: tuple[tuple[str, str], ...] = ()
    strategy: str | None = None
    world_size: int | None = None
    files: int = 1
    disk_bytes: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def tensor_bytes(self) -> int:
        """The bytes of all tensors together."""
        return sum(tensor.nbytes for tensor in self.tensors)

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON types (``fabric checkpoint inspect --json``)."""
        return {
            "path": self.path,
            "format": self.format,
            "description": self.description,
            "strategy": self.strategy,
            "world_size": self.world_size,
            "files": self.files,
            "disk_bytes": self.disk_bytes,
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}
                for t in self.tensors
            ],
            "objects": [{"name": name, "value": value} for name, value in self.objects],
            "totals": {"tensors": len(self.tensors), "tensor_bytes": self.tensor_bytes},
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """The summary as an aligned table for people."""
        lines = [
            f"{self.path}: {self.format} ({self.description})",
            f"strategy: {self.strategy or 'not recorded'}    world size: "
            f"{self.world_size if self.world_size is not None else 'not recorded'}    files: {self.files} "
            f"({format_bytes(self.disk_bytes)} on disk)",
        ]
        if self.tensors:
            rows = [("name", "dtype", "shape", "bytes")] + [
                (t.name, t.dtype, str(list(t.shape)), str(t.nbytes)) for t in self.tensors
            ]
            widths = [max(len(row[column]) for row in rows) for column in range(3)]
            lines.append("")
            lines += [
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>10}"
                for row in rows
            ]
        lines.append(
            f"{len(self.tensors)} tensors, {format_bytes(self.tensor_bytes)} ({self.tensor_bytes} bytes)"
        )
        if self.objects:
            lines.append("other entries: " + ", ".join(f"{name}={value}" for name, value in self.objects))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def disk_usage(path: Path) -> tuple[int, int]:
    """``(files, bytes)`` of a file, or of every file below a directory."""
    if not path.is_dir():
        return 1, path.stat().st_size
    files = [Path(root) / name for root, _, names in os.walk(path) for name in names]
    return len(files), sum(file.stat().st_size for file in files)


def describe_file(path: str | os.PathLike[str], weights_only: bool = True) -> CheckpointSummary:
    """Describe a single ``torch.save`` file, memory-mapped: tensor bytes are not read.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        ValueError: The file is damaged, or holds objects that safe loading refuses.
    """
    from fabric_core.io.checkpoint_io import read_checkpoint_file

    path = Path(path)
    checkpoint = read_checkpoint_file(path, weights_only=weights_only, mmap=True)
    tensors, objects = summarize(checkpoint)
    files, size = disk_usage(path)
    return CheckpointSummary(
        path=str(path),
        format="file",
        description="one torch.save file, full tensors",
        tensors=tensors,
        objects=objects,
        files=files,
        disk_bytes=size,
    )


def summarize(state: Any) -> tuple[tuple[TensorInfo, ...], tuple[tuple[str, str], ...]]:
    """The tensors and the other entries of a loaded checkpoint, with flattened names."""
    import torch

    tensors: list[TensorInfo] = []
    objects: list[tuple[str, str]] = []
    for name, value in _flatten(state, ""):
        if isinstance(value, torch.Tensor):
            tensors.append(
                TensorInfo(
                    name,
                    str(value.dtype).removeprefix("torch."),
                    tuple(value.shape),
                    value.nelement() * value.element_size(),
                )
            )
        else:
            objects.append((name, shorten(value)))
    return tuple(tensors), tuple(objects)


def shorten(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, entry in value.items():
            yield from _flatten(entry, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)) and value and not _is_plain(value):
        for index, entry in enumerate(value):
            yield from _flatten(entry, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, value


def _is_plain(values: list[Any] | tuple[Any, ...]) -> bool:
    """A list of numbers or strings (e.g. Adam's ``betas``) is shown as one value."""
    return all(isinstance(value, (int, float, str, bool)) or value is None for value in values)
