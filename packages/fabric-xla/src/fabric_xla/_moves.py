"""Moving a module onto an XLA device without leaving its optimizer behind.

A CPU tensor cannot take over XLA storage, so ``module.to(xla_device)`` replaces every
parameter with a new ``Parameter`` object (a CUDA move keeps them). An optimizer created
before ``fabric.setup`` would go on stepping the stale CPU copies. `ParameterMoves`
remembers which parameter became which (core's
`ParameterSlots`), and points optimizers at the
moved ones (`repoint_optimizer`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.weak import WeakIdKeyDictionary

from fabric_core.utilities.optimizer import ParameterSlots, repoint_optimizer

__all__ = ["ParameterMoves"]


class ParameterMoves:
    """The parameters a strategy moved, old object to new, until the optimizers are set up.

    The old parameters are held weakly: an entry goes once nothing else holds its old
    parameter. Pickling (for spawned processes) leaves the entries behind.
    """

    def __init__(self) -> None:
        self._moved = WeakIdKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._moved = WeakIdKeyDictionary()

    def move(self, module: nn.Module, device: torch.device) -> None:
        """Move ``module`` to ``device`` in place and remember the replaced parameters."""
        slots = ParameterSlots(module)
        module.to(device)
        self._moved.update(slots.replacements())

    def retarget(self, optimizer: Optimizer) -> Optimizer:
        """Point ``optimizer`` (its parameter groups and any state it has) at the moved parameters."""
        repoint_optimizer(optimizer, self._moved)
        return optimizer
