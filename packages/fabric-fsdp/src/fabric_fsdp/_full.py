"""Full checkpoints: one ``torch.save`` file with full tensors, written by rank 0.

The file holds what a single-device run would write (module state dicts, index-keyed
optimizer state dicts), so plain ``torch.load`` and ``load_state_dict`` read it. Gathering
is collective; loading reads the whole file in every process, which keeps its own shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.optim import Optimizer

from fabric_core.io.optimizer_state import (
    Filter,
    ModuleFinder,
    apply_state,
    collect_state,
    named_optimizer_state,
    optimizer_state_to_torch,
)

if TYPE_CHECKING:
    from fabric_core.strategies.parallel import ParallelStrategy

__all__ = ["load_full", "load_full_module", "save_full"]

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_full(
    strategy: ParallelStrategy,
    path: str | Path,
    state: dict[str, Any],
    filter: Filter | None,
    module_for: ModuleFinder,
) -> None:
    """Gather full tensors on rank 0 (one tensor at a time, into CPU memory) and write one file from there."""
    checkpoint = collect_state(
        state,
        filter,
        module_state=lambda m: get_model_state_dict(m, options=_FULL),
        optimizer_state=lambda m, o: _full_optimizer_state(m, o),
        module_for=module_for,
    )
    if strategy.is_global_zero:
        strategy.checkpoint_io.save_checkpoint(checkpoint, path)


def _full_optimizer_state(module: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    named = get_optimizer_state_dict(module, optimizer, options=_FULL)
    return optimizer_state_to_torch(named) if named else named


def load_full(
    strategy: ParallelStrategy,
    path: Path,
    state: dict[str, Any] | nn.Module | Optimizer | None,
    strict: bool,
    weights_only: bool | None,
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Restore ``state`` from a full file (or one state dict, when ``state`` is a module or optimizer)."""
    checkpoint = strategy.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
    return apply_state(state, checkpoint, strict, path, load_full_module, _load_full_optimizer, module_for)


def load_full_module(module: nn.Module, state_dict: dict[str, Any], strict: bool = True) -> None:
    """Load a full state dict (plain tensors, identical on every process) into a sharded module.

    Each process keeps only the slices of its own shards.
    """
    set_model_state_dict(module, state_dict, options=StateDictOptions(full_state_dict=True, strict=strict))


def _load_full_optimizer(module: nn.Module, optimizer: Optimizer, state_dict: dict[str, Any]) -> None:
    named = named_optimizer_state(state_dict, module, optimizer)
    set_optimizer_state_dict(module, optimizer, named, options=StateDictOptions(full_state_dict=True))
