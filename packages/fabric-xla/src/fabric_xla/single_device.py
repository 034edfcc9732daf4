"""SingleDeviceXLAStrategy: one process on one XLA device."""

from __future__ import annotations

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.single_device import SingleDeviceStrategy
from fabric_xla._checkpoint import XLACheckpoints
from fabric_xla._moves import ParameterMoves
from fabric_xla._steps import XLASteps

__all__ = ["SingleDeviceXLAStrategy"]


class SingleDeviceXLAStrategy(XLACheckpoints, XLASteps, SingleDeviceStrategy):
    """Trains in the current process on one XLA device (a TPU core, or XLA:CPU).

    XLA records the forward and backward passes lazily; ``optimizer.step()`` steps and
    then calls ``torch_xla.sync()``, which compiles the step's graph once and runs it, so
    the loop needs no XLA-specific call (a loop that calls `mark_step` after the
    step, as the seed's does, runs unchanged). Checkpoints are CPU tensors that plain
    ``torch.load`` and every other strategy read.

    Args:
        device: The XLA device: an index (``1`` is ``xla:1``), ``"xla:1"`` or a
            ``torch.device``; picked from ``Fabric(devices=...)`` when omitted.
        accelerator: The XLA accelerator; set by ``Fabric`` when omitted.
        checkpoint_io: How checkpoint files are written.
        precision_plugin: The precision plugin; built from ``Fabric(precision=...)`` when omitted.
        precision: Lightning Fabric's name for ``precision_plugin`` (keyword only; pass one
            of the two).

    Raises:
        ValueError: ``device`` is not an XLA device, or both ``precision_plugin`` and
            ``precision`` were given.
    """

    supported_accelerators = ("xla",)
    unsupported_accelerator_hint = (
        "Use accelerator='tpu' (without a TPU, PJRT_DEVICE=CPU runs XLA on the CPU), or strategy='single_device' "
        "on the CPU."
    )
    default_accelerator = "tpu"

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        *,
        precision: Precision | None = None,
    ) -> None:
        if isinstance(device, int) and not isinstance(device, bool):
            device = torch.device("xla", device)
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            device=device,
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
        )
        self._moves = ParameterMoves()
        if self._device is not None and self._device.type != "xla":
            raise ValueError(
                f"{type(self).__name__}(device={device!r}) is not an XLA device. Pass an index (device=0) or "
                "'xla:0', or use strategy='single_device' for other devices."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device='{self._device}', precision={self._precision!r})"
