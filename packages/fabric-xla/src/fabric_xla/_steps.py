"""What every XLA strategy does the same way around a training step: lazy graphs cut at the step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_xla._moves import ParameterMoves
from fabric_xla._runtime import explained_backward_errors, sync
from fabric_xla.precision import xla_precision

if TYPE_CHECKING:
    from fabric_core.precision.precision import Precision

__all__ = ["XLASteps"]


class XLASteps:
    """Moving modules, re-pointing optimizers and cutting graphs, shared by the XLA strategies.

    Mixed in before the strategy base (``class S(XLACheckpoints, XLASteps, Strategy)``), so
    ``super()`` reaches the base strategy's backward and optimizer step. A strategy that
    reduces gradients itself (``XLAStrategy``) overrides `optimizer_step`.
    """

    _moves: ParameterMoves

    if TYPE_CHECKING:  # provided by the strategy base this is mixed into

        @property
        def root_device(self) -> torch.device: ...

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """``32-true``, ``bf16-true`` or ``bf16-mixed`` on XLA devices (see `fabric_xla.precision`)."""
        return xla_precision(precision, cls.__name__)

    def module_to_device(self, module: nn.Module) -> None:
        """Move the module to this strategy's XLA device (optimizers set up afterwards follow its parameters)."""
        self._moves.move(module, self.root_device)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Point the optimizer at the parameters' XLA copies if it was created before the move."""
        return self._moves.retarget(optimizer)

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass through the precision plugin (recorded lazily, run at the step)."""
        with explained_backward_errors():
            super().backward(tensor, module, *args, **kwargs)  # type: ignore[misc]

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step the optimizer, then run the step's graph (``torch_xla.sync()``)."""
        result = super().optimizer_step(optimizer, **kwargs)  # type: ignore[misc]
        sync()
        return result

    def mark_step(self) -> None:
        """Cut the lazily recorded graph here: compile it (once per distinct graph) and run it.

        This is ``torch_xla.sync()`` (formerly ``xm.mark_step()``). ``optimizer.step()``
        and saving already call it, so a call right after them has nothing left to run;
        call it where the loop has no optimizer step (evaluation) to keep graphs small.
        """
        sync()
