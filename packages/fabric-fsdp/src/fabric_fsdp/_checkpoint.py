"""Saving and loading sharded modules: which layout, and where the work goes.

The layouts are described in :mod:`fabric_fsdp.checkpoint`. Model and optimizer state go
through ``torch.distributed.checkpoint.state_dict`` (``get_*_state_dict`` /
``set_*_state_dict``), which knows how DTensor shards map to full tensors; everything else
is stored as it is. :mod:`fabric_fsdp._dcp` writes and reads sharded directories,
:mod:`fabric_fsdp._full` single files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.io import diagnose
from fabric_fsdp._dcp import is_dcp_checkpoint, load_sharded, save_sharded
from fabric_fsdp._full import load_full, load_full_module, save_full
from fabric_fsdp._state import ModuleFinder

if TYPE_CHECKING:
    from fabric_core.strategies.parallel import ParallelStrategy

__all__ = ["load_checkpoint", "load_full_module", "save_full", "save_sharded"]


def load_checkpoint(
    strategy: ParallelStrategy,
    path: str | Path,
    state: dict[str, Any] | nn.Module | Optimizer | None,
    strict: bool,
    weights_only: bool | None,
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Restore ``state`` in place from a DCP directory or a full file; return the entries not restored.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        ValueError: ``path`` is a directory but not a DCP checkpoint.
        KeyError: ``strict`` and ``state`` names an entry the checkpoint lacks.
    """
    path = Path(path)
    if not path.exists():
        raise diagnose.missing_checkpoint(path)
    safe = True if weights_only is None else weights_only
    if is_dcp_checkpoint(path):
        return load_sharded(path, state, strict, safe, module_for)
    if path.is_dir():
        raise ValueError(
            f"'{path}' is a directory without a .metadata file, so it is not a torch.distributed.checkpoint "
            "directory. Pass the directory fabric.save() wrote, or a single checkpoint file."
        )
    return load_full(strategy, path, state, strict, weights_only, module_for)
