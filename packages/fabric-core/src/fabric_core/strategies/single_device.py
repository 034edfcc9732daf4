"""One process on one device."""

from __future__ import annotations

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    """Trains in the current process on one device; collectives return their input.

    Args:
        device: The device to train on (``"cpu"``, ``"cuda:1"``, ...); the connector picks
            it from ``Fabric(accelerator=..., devices=...)`` when omitted.
        accelerator: The accelerator; inferred when omitted.
        checkpoint_io: How checkpoints are written.
        precision_plugin: The precision plugin.
        precision: Lightning Fabric's name for ``precision_plugin``.

    Everything after ``device`` is keyword-only.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        *,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        precision: Precision | None = None,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
        )
        self._device = torch.device(device) if device is not None else None

    def configure(self, config: StrategyConfig) -> None:
        """Adopt the resolved device, refusing several devices or nodes, or a device that contradicts ``device=``."""
        if self._device is not None and (config.given("devices") or config.given("accelerator")):
            requested = config.parallel_devices
            if len(requested) != 1 or requested[0] != self._device:
                raise ValueError(
                    f"SingleDeviceStrategy(device='{self._device}') was combined with Fabric("
                    + ", ".join(f"{k}={v!r}" for k, v in (config.explicit or {}).items())
                    + f"), which selects {[str(d) for d in requested]}. Pass the device in one place only."
                )
        super().configure(config)
        if len(config.parallel_devices) != 1 or config.num_nodes != 1:
            raise ValueError(
                f"{type(self).__name__} runs one process on one device, but Fabric(devices="
                f"{len(config.parallel_devices)}, num_nodes={config.num_nodes}) was given. Use a multi-process "
                "strategy such as strategy='ddp' (pip install fabric-ddp), or devices=1."
            )

    def __repr__(self) -> str:
        return f"SingleDeviceStrategy(device='{self._device}', precision={self._precision!r})"
