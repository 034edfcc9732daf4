"""Saving a checkpoint from XLA devices: finish the pending graph, move to the CPU, write once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

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


class XLACheckpoints:
    """Checkpoint methods shared by the XLA strategies (mixed in before the strategy base).

    Saving runs each process's pending graph and writes ``state`` as CPU tensors from
    global rank 0; loading reads the file through the base strategy, then runs the
    copies onto the device right away.
    """

    # Same parameters as Strategy.save_checkpoint (the contract every strategy keeps); only the body is its own.
    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Run the pending graph, then write ``state`` as CPU tensors from global rank 0."""
        save_from_rank_zero(self, path, state, storage_options, filter)  # type: ignore[arg-type,unused-ignore]

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read the file and copy it onto the device; the copies run right away."""
        remainder: dict[str, Any] = super().load_checkpoint(  # type: ignore[misc]
            path, state, strict=strict, weights_only=weights_only
        )
        sync()
        return remainder
