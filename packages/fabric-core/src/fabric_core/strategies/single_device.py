"""One process on one device."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy

_T = TypeVar("_T")


class SingleDeviceStrategy(Strategy):
    """Trains in the current process on one device; collectives return their input.

    Args:
        device: The device to train on (``"cpu"``, ``"cuda:1"``, ...); the connector picks
            it from ``Fabric(accelerator=..., devices=...)`` when omitted.
        accelerator: The accelerator; inferred when omitted.
        checkpoint_io: How checkpoints are written.
        precision: The precision plugin.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision=precision)
        self._device = torch.device(device) if device is not None else None

    def configure(self, config: StrategyConfig) -> None:
        """Adopt the resolved device, refusing a count or device that contradicts ``device=``."""
        if self._device is not None and (config.given("devices") or config.given("accelerator")):
            requested = config.parallel_devices
            if len(requested) != 1 or requested[0] != self._device:
                raise ValueError(
                    f"SingleDeviceStrategy(device='{self._device}') was combined with Fabric("
                    + ", ".join(f"{k}={v!r}" for k, v in (config.explicit or {}).items())
                    + f"), which selects {[str(d) for d in requested]}. Pass the device in one place only."
                )
        super().configure(config)
        if self._device is None:
            self._device = config.parallel_devices[0]

    @property
    def root_device(self) -> torch.device:
        """The device given at construction (or resolved by the connector)."""
        if self._device is None:
            raise RuntimeError(
                "SingleDeviceStrategy has no device yet; build it through Fabric or pass device=."
            )
        return self._device

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = "mean") -> Any:
        """Return ``tensor`` unchanged: one process holds the whole result."""
        return tensor

    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """Return ``tensor`` with a leading dimension of size one, like a gather over one process."""
        return tensor.unsqueeze(0) if isinstance(tensor, torch.Tensor) else tensor

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        """Return ``obj`` unchanged."""
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Return at once: there is no other process to wait for."""

    def __repr__(self) -> str:
        return f"SingleDeviceStrategy(device='{self._device}', precision={self._precision!r})"
