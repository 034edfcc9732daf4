"""Parameters across sharding: re-pointing optimizers, materialising meta modules, syncing replicas.

``fully_shard`` and ``parallelize_module`` replace each parameter of a module with a new
``nn.Parameter`` holding a DTensor (the local shard). An optimizer built before that still
holds the old tensors and would update nothing the model uses, so the old-to-new mapping is
recorded while sharding (core's `ParameterSlots`) and
applied to optimizers when they are set up (`rebind_optimizer`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.optim import Optimizer

from fabric_core.utilities.optimizer import repoint_optimizer

__all__ = [
    "broadcast_module_states",
    "has_meta_tensors",
    "materialize",
    "rebind_optimizer",
]


def rebind_optimizer(optimizer: Optimizer, replacements: Mapping[torch.Tensor, torch.Tensor]) -> int:
    """Point ``optimizer``'s parameter groups at the sharded parameters, in place; return how many moved.

    Checks that the optimizer can follow, then re-points it with core's
    `repoint_optimizer` (nothing is changed when a
    check fails).

    Raises:
        ValueError: The optimizer already holds state (it has stepped, or loaded a state
            dict) for a parameter that was replaced, or it refers to meta-device parameters
            that no set-up model replaced.
    """
    for parameter in (p for group in optimizer.param_groups for p in group["params"]):
        if parameter not in replacements and parameter.is_meta:
            raise ValueError(
                f"{type(optimizer).__name__} optimizes a parameter on the meta device that belongs to no "
                "model set up with this Fabric. Set up the model first (fabric.setup_module(model)), or "
                "pass model and optimizer together: fabric.setup(model, optimizer)."
            )
        if parameter in replacements and optimizer.state.get(parameter):
            raise ValueError(
                f"{type(optimizer).__name__} already holds state (it has stepped or loaded a state dict) for "
                "parameters that sharding replaced, and that state does not fit the shards. Create the "
                "optimizer before its first step, set it up with the model, and load optimizer state with "
                "fabric.load() after fabric.setup()."
            )
    return repoint_optimizer(optimizer, replacements)


def has_meta_tensors(module: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` is on the meta device."""
    return any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers()))


def materialize(module: nn.Module, device: torch.device) -> list[str]:
    """Give a sharded module built on the meta device real memory and initial values.

    Every tensor is allocated where it lives (``to_empty``): a DTensor only for its local
    shard. Then each submodule with ``reset_parameters()`` is initialised bottom-up: its
    own sharded parameters are swapped for full-size temporaries, ``reset_parameters()``
    runs on those, and rank 0's values are scattered into the shards
    (``distribute_tensor``). Peak extra memory is one submodule's own parameters. The values
    equal an ordinary initialisation with the same seed when submodules initialise in the
    order they were built, whatever the number of processes (DTensor's own random ops only
    shard random numbers correctly on CUDA-like devices).

    Plain (replicated) parameters and buffers are then broadcast from rank 0.

    Returns:
        The names of submodules with parameters but no ``reset_parameters()``, whose values
        are left uninitialised (load them from a checkpoint).
    """
    module.to_empty(device=device)
    uninitialised = []
    for name, submodule in _bottom_up(module):
        if next(submodule.parameters(recurse=False), None) is None:
            continue
        if not callable(getattr(submodule, "reset_parameters", None)):
            uninitialised.append(name or type(submodule).__name__)
            continue
        _reset_through_full_tensors(submodule)
    broadcast_module_states(module)
    return uninitialised


def broadcast_module_states(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s plain (non-DTensor) parameters and buffers to every process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if not isinstance(tensor, DTensor) and not tensor.is_meta:
                dist.broadcast(tensor.data, src=src)


def warn_uninitialised(names: Iterable[str]) -> None:
    """Warn that the listed submodules kept uninitialised memory after materialisation."""
    names = list(names)
    if names:
        warnings.warn(
            f"These modules were built on the meta device and have no reset_parameters(), so their parameters "
            f"hold uninitialised memory: {', '.join(names)}. Load their weights (fabric.load) before training, "
            "or give them a reset_parameters() method.",
            stacklevel=4,
        )


def _reset_through_full_tensors(submodule: nn.Module) -> None:
    sharded: dict[str, DTensor] = {}
    for name, parameter in submodule._parameters.items():
        if isinstance(parameter, DTensor):
            sharded[name] = parameter
    if not sharded:
        with torch.no_grad():
            submodule.reset_parameters()  # type: ignore[operator]
        return
    temporaries = {
        name: nn.Parameter(
            torch.empty(p.shape, dtype=p.dtype, device=p.to_local().device), requires_grad=p.requires_grad
        )
        for name, p in sharded.items()
    }
    submodule._parameters.update(temporaries)
    try:
        with torch.no_grad():
            submodule.reset_parameters()  # type: ignore[operator]
    finally:
        submodule._parameters.update(sharded)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, target in sharded.items():
            full = temporaries[name].detach()
            shard = distribute_tensor(full, target.device_mesh, target.placements)
            target.to_local().copy_(shard.to_local())


def _bottom_up(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(name: str, current: nn.Module) -> None:
        if id(current) in seen:
            return
        seen.add(id(current))
        for child_name, child in current.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)
        order.append((name, current))

    visit(prefix, module)
    return order
