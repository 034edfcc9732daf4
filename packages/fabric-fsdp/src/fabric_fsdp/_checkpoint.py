"""Saving and loading sharded modules: which layout, and where the work goes.

The layouts are described in `fabric_fsdp.checkpoint`. Model and optimizer state go
through ``torch.distributed.checkpoint.state_dict`` (``get_*_state_dict`` /
``set_*_state_dict``), which knows how DTensor shards map to full tensors; everything else
is stored as it is. `fabric_core.io.dcp` writes and reads sharded directories (for every strategy),
`fabric_fsdp._full` single files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.io.dcp import save_sharded
from fabric_core.io.interchange import load_checkpoint_anywhere
from fabric_core.io.optimizer_state import ModuleFinder
from fabric_fsdp._full import load_full, load_full_module, save_full

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
    """Restore ``state`` in place from a DCP directory, a full file or another format's directory.

    See `fabric_core.io.interchange.load_checkpoint_anywhere`; single files are read
    whole by every process, which keeps its shards.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        IsADirectoryError: ``path`` is a directory of no known checkpoint format.
        KeyError: ``strict`` and ``state`` names an entry the checkpoint lacks.
    """

    def load_file(file: Path, state: Any, strict: bool, weights_only: bool | None) -> dict[str, Any]:
        return load_full(strategy, file, state, strict, weights_only, module_for)

    return load_checkpoint_anywhere(path, state, strict, weights_only, module_for, load_file)
