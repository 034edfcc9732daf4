"""Loading a checkpoint whatever wrote it: a single file, a DCP directory, or another registered format.

Every first-party strategy writes one of three things: a ``torch.save`` file of full
tensors (single device, ddp, dp, ``fsdp`` with ``state_dict_type="full"``), a DCP directory
(``fsdp``, ``model_parallel``) or a directory of a format a plugin registers (DeepSpeed's).
`load_checkpoint_anywhere` picks the reader from what is at the path, so any of them
loads under any strategy:

- a file goes to the strategy's own file loader, which keeps its shards of the full tensors;
- a DCP directory is read by `fabric_core.io.dcp.load_sharded`, each process reading
  the slices it holds (DCP reshards from any world size to any other);
- a directory of another format is consolidated by that format
  (`consolidate`) into a temporary single
  file on each process, which the file loader then reads.

Optimizer state keyed by parameter name (DCP's form) and by index (``Optimizer.state_dict``)
both load: `fabric_core.io.optimizer_state` converts through the model in the state.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.io import diagnose
from fabric_core.io.detection import detect_format
from fabric_core.io.optimizer_state import ModuleFinder

__all__ = ["FileLoader", "load_checkpoint_anywhere"]

State = dict[str, Any] | nn.Module | Optimizer | None

FileLoader = Callable[[Path, State, bool, "bool | None"], dict[str, Any]]
"""``(path, state, strict, weights_only) -> entries not restored``: a strategy's reader of single files."""


def load_checkpoint_anywhere(
    path: str | Path,
    state: State,
    strict: bool,
    weights_only: bool | None,
    module_for: ModuleFinder,
    load_file: FileLoader,
) -> dict[str, Any]:
    """Restore ``state`` in place from the checkpoint at ``path``, whichever layout it has.

    Args:
        path: A checkpoint file or directory.
        state: What to restore (see `fabric_core.Fabric.load`).
        strict: Require every name in ``state`` in the checkpoint, and exact module keys.
        weights_only: Refuse pickled objects (``None``: refuse).
        module_for: Finds the module an optimizer trains (for name-keyed optimizer state).
        load_file: The strategy's reader of single files.

    Returns:
        The checkpoint entries that were not restored into ``state``.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        IsADirectoryError: ``path`` is a directory of no known checkpoint format.
    """
    from fabric_core.io.dcp import is_dcp_checkpoint, load_sharded

    path = Path(path)
    if not path.exists():
        raise diagnose.missing_checkpoint(path)
    if is_dcp_checkpoint(path):
        return load_sharded(path, state, strict, weights_only is not False, module_for)
    if not path.is_dir():
        return load_file(path, state, strict, weights_only)
    name = detect_format(path)
    if name is None:
        raise diagnose.directory_error(path)
    return _load_consolidated(name, path, state, strict, weights_only, load_file)


def _load_consolidated(
    name: str, path: Path, state: State, strict: bool, weights_only: bool | None, load_file: FileLoader
) -> dict[str, Any]:
    """Consolidate a directory of the registered format ``name`` into a scratch file and load that."""
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY

    checkpoint_format = CHECKPOINT_FORMAT_REGISTRY.build(name)
    with tempfile.TemporaryDirectory(prefix="fabric-load-") as scratch:
        single = Path(scratch) / f"{path.name}.pt"
        checkpoint_format.consolidate(path, single)
        return load_file(single, state, strict, weights_only)
