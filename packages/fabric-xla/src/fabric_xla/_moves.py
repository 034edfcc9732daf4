"""Moving a module onto an XLA device without leaving its optimizer behind.

A CPU tensor cannot take over XLA storage, so ``module.to(xla_device)`` replaces every
parameter with a new ``Parameter`` object (a CUDA move keeps them). An optimizer created
before ``fabric.setup`` would go on stepping the stale CPU copies. :class:`ParameterMoves`
remembers which parameter became which, and points optimizers at the moved ones.
"""

from __future__ import annotations

import functools
import weakref

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["ParameterMoves"]


class ParameterMoves:
    """The parameters a strategy moved, old object to new, until the optimizers are set up."""

    def __init__(self) -> None:
        # Keyed by id: tensors compare elementwise, so they cannot be dictionary keys by value.
        # The weak reference drops the entry once the old parameter is gone.
        self._moved: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}

    def move(self, module: nn.Module, device: torch.device) -> None:
        """Move ``module`` to ``device`` in place and remember the replaced parameters."""
        before = list(module.parameters())
        module.to(device)
        for old, new in zip(before, module.parameters()):
            if old is not new:
                key = id(old)
                self._moved[key] = (weakref.ref(old, functools.partial(self._forget, key)), new)

    def _forget(self, key: int, _: object) -> None:
        self._moved.pop(key, None)

    def replacement(self, parameter: torch.Tensor) -> torch.Tensor:
        """The moved copy of ``parameter``, or ``parameter`` itself if it was not moved."""
        entry = self._moved.get(id(parameter))
        return entry[1] if entry is not None and entry[0]() is parameter else parameter

    def retarget(self, optimizer: Optimizer) -> Optimizer:
        """Point ``optimizer`` (its parameter groups and any state it has) at the moved parameters."""
        for group in optimizer.param_groups:
            group["params"] = [self.replacement(p) for p in group["params"]]
        for old in [p for p in optimizer.state if self.replacement(p) is not p]:
            new = self.replacement(old)
            optimizer.state[new] = {
                name: value.to(new.device) if isinstance(value, torch.Tensor) and value.dim() > 0 else value
                for name, value in optimizer.state.pop(old).items()
            }
        return optimizer
