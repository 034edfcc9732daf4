"""Saving a checkpoint from XLA devices: finish the pending graph, move to the CPU, write once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.utilities.checkpoint import collect_state
from fabric_xla._runtime import sync, to_cpu

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["save_from_rank_zero"]


def save_from_rank_zero(
    strategy: Strategy,
    path: str | Path,
    state: dict[str, Any],
    storage_options: Any | None = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
) -> None:
    """Write ``state`` to ``path`` from global rank 0, as CPU tensors that plain ``torch.load`` reads.

    Every process first runs its pending graph (``torch_xla.sync()``) and collects the
    state dicts, so a strategy that gathers shards can do so collectively; only global
    rank 0 copies them to the CPU and writes the file through the checkpoint I/O.
    """
    sync()
    checkpoint = collect_state(state, strategy, filter)
    if strategy.is_global_zero:
        strategy.checkpoint_io.save_checkpoint(to_cpu(checkpoint), path, storage_options=storage_options)
