"""SingleDeviceXLAStrategy: one process on one XLA device."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.single_device import SingleDeviceStrategy
from fabric_xla._checkpoint import XLACheckpoints
from fabric_xla._moves import ParameterMoves
from fabric_xla._runtime import explained_backward_errors, sync
from fabric_xla.precision import xla_precision

__all__ = ["SingleDeviceXLAStrategy"]


class SingleDeviceXLAStrategy(XLACheckpoints, SingleDeviceStrategy):
    """Trains in the current process on one XLA device (a TPU core, or XLA:CPU).

    XLA records the forward and backward passes lazily; ``optimizer.step()`` steps and
    then calls ``torch_xla.sync()``, which compiles the step's graph once and runs it, so
    the loop needs no XLA-specific call (a loop that calls :meth:`mark_step` after the
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

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """``32-true``, ``bf16-true`` or ``bf16-mixed`` on XLA devices (see :mod:`fabric_xla.precision`)."""
        return xla_precision(precision, cls.__name__)

    def module_to_device(self, module: nn.Module) -> None:
        """Move the module to the XLA device (optimizers set up afterwards follow its parameters)."""
        self._moves.move(module, self.root_device)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Point the optimizer at the parameters' XLA copies if it was created before the move."""
        return self._moves.retarget(optimizer)

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass through the precision plugin (recorded lazily, run at the step)."""
        with explained_backward_errors():
            super().backward(tensor, module, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step the optimizer, then run the step's graph (``torch_xla.sync()``)."""
        result = super().optimizer_step(optimizer, **kwargs)
        sync()
        return result

    def mark_step(self) -> None:
        """Cut the lazily recorded graph here: compile it (once per distinct graph) and run it.

        This is ``torch_xla.sync()`` (formerly ``xm.mark_step()``). ``optimizer.step()``
        and saving already call it, so a call right after them has nothing left to run;
        call it where the loop has no optimizer step (evaluation) to keep graphs small.
        """
        sync()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device='{self._device}', precision={self._precision!r})"
