"""The manifest of a checkpoint directory: who wrote it, in which format, at which size.

A sharded checkpoint is a directory of files whose meaning depends on who wrote them. The
manifest, ``fabric-manifest.json`` inside the directory, records it in a few fields that
``fabric checkpoint inspect`` shows and ``fabric.load`` names when it cannot convert
something::

    {"format": "dcp", "strategy": "FSDPStrategy", "world_size": 2, "mesh": {"data_parallel": 2},
     "fabric_version": "0.1.0", "torch_version": "2.13.0"}

It is written into the directory before the directory takes its final name, so a complete
checkpoint always has it; a directory without one was written by something else (DCP
itself, an older fabric) and loads all the same. Single files have none: they are plain
``torch.save`` files, read alike by every strategy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["MANIFEST_NAME", "Manifest", "manifest_of", "read_manifest", "write_manifest"]

MANIFEST_NAME = "fabric-manifest.json"
"""The manifest's file name inside a checkpoint directory."""


@dataclass(frozen=True)
class Manifest:
    """What a checkpoint directory's manifest says.

    Attributes:
        format: The registered checkpoint format (``"dcp"``, ``"deepspeed"``, ...).
        strategy: The class name of the strategy that saved it.
        world_size: How many processes saved it.
        mesh: The device mesh's dimensions by name (``{"data_parallel": 2, "tensor_parallel": 2}``),
            or ``None`` without a mesh.
        fabric_version: The version of fabric-core that wrote it.
        torch_version: The version of torch that wrote it.
    """

    format: str
    strategy: str
    world_size: int
    mesh: dict[str, int] | None
    fabric_version: str
    torch_version: str

    def describe(self) -> str:
        """One line: ``dcp, saved by FSDPStrategy on 2 processes (mesh data_parallel=2), fabric 0.1.0``."""
        mesh = f" (mesh {', '.join(f'{k}={v}' for k, v in self.mesh.items())})" if self.mesh else ""
        processes = "1 process" if self.world_size == 1 else f"{self.world_size} processes"
        return (
            f"{self.format}, saved by {self.strategy} on {processes}{mesh}, "
            f"fabric {self.fabric_version}, torch {self.torch_version}"
        )


def manifest_of(strategy: Strategy, format: str) -> Manifest:
    """The manifest of a checkpoint that ``strategy`` is saving in ``format``."""
    import torch

    from fabric_core.__about__ import __version__

    return Manifest(
        format=format,
        strategy=type(strategy).__name__,
        world_size=int(getattr(strategy, "world_size", 1)),
        mesh=_mesh_of(strategy),
        fabric_version=__version__,
        torch_version=torch.__version__.split("+")[0],
    )


def write_manifest(directory: str | Path, strategy: Strategy, format: str) -> None:
    """Write the manifest of ``strategy``'s checkpoint into ``directory`` (on one process)."""
    manifest = manifest_of(strategy, format)
    (Path(directory) / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=1) + "\n")


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest of the checkpoint directory ``path``; ``None`` for a file or a directory without one.

    A manifest that cannot be read (edited by hand, or from a newer fabric with other
    fields) counts as none: it describes the checkpoint, the checkpoint's own files decide.
    """
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        return Manifest(
            format=str(data["format"]),
            strategy=str(data["strategy"]),
            world_size=int(data["world_size"]),
            mesh={str(k): int(v) for k, v in data["mesh"].items()} if data.get("mesh") else None,
            fabric_version=str(data["fabric_version"]),
            torch_version=str(data["torch_version"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _mesh_of(strategy: Any) -> dict[str, int] | None:
    try:
        mesh = getattr(strategy, "device_mesh", None)
    except Exception:  # a strategy that builds its mesh only once set up
        return None
    names = getattr(mesh, "mesh_dim_names", None)
    if mesh is None or not names:
        return None
    return {str(name): int(size) for name, size in zip(names, mesh.shape)}
