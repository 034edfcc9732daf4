"""Keeping optimizers on the parameters a model trains when setting it up replaces them.

Moving a module to a device whose tensors cannot share storage with the old ones (XLA),
or sharding it (FSDP2's ``fully_shard``, ``parallelize_module``), registers a *new*
``nn.Parameter`` object in each slot. An optimizer built over the old objects would go on
stepping tensors the model no longer uses. `ParameterSlots` records which object
replaced which; `repoint_optimizer` moves an optimizer over to the new ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["ParameterSlots", "repoint_optimizer"]


class ParameterSlots:
    """Where each parameter of a module is registered (owner module and attribute name).

    Take the slots before the module's parameters are replaced, then call
    `replacements`::

        slots = ParameterSlots(module)
        module.to(device)
        repoint_optimizer(optimizer, slots.replacements())
    """

    def __init__(self, module: nn.Module) -> None:
        self._slots = [
            (owner, name, parameter)
            for owner in module.modules()
            for name, parameter in owner._parameters.items()
            if parameter is not None
        ]

    def replacements(self) -> WeakIdKeyDictionary:
        """``{old parameter: new parameter}`` for every slot whose parameter object changed.

        The mapping holds the old parameters weakly, so their memory is freed as soon as
        nothing else refers to them. The slots are forgotten: call this once.
        """
        mapping = WeakIdKeyDictionary()
        for owner, name, old in self._slots:
            new = owner._parameters.get(name)
            if new is not None and new is not old:
                mapping[old] = new
        self._slots = []
        return mapping


def repoint_optimizer(optimizer: Optimizer, replacements: Mapping[torch.Tensor, torch.Tensor]) -> int:
    """Point ``optimizer`` at the new parameters of ``replacements`` (``{old: new}``), in place.

    Each parameter group's ``params`` list is edited in place, so optimizers that keep a
    reference to it (LBFGS) follow. State the optimizer already holds for an old parameter
    moves to the new one, its tensors (other than scalars such as ``step``) onto the new
    parameter's device. Parameters not in ``replacements`` are left as they are.

    Returns:
        How many parameters of the optimizer were replaced.
    """
    moved = 0
    for group in optimizer.param_groups:
        params = group["params"]
        for index, parameter in enumerate(params):
            new = replacements.get(parameter)
            if new is not None:
                params[index] = new
                moved += 1
    for old in [p for p in optimizer.state if p in replacements]:
        new = replacements[old]
        optimizer.state[new] = {
            name: value.to(new.device) if isinstance(value, torch.Tensor) and value.dim() > 0 else value
            for name, value in optimizer.state.pop(old).items()
        }
    return moved
