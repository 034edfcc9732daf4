"""The SPMD mesh and the sharding annotations ``xla_spmd`` puts on parameters and batches."""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn

__all__ = ["AXES", "build_mesh", "check_mesh_covers", "check_mesh_shape", "parameter_spec", "shard_batch"]

AXES: Final = ("data", "fsdp")
"""The mesh axes: ``data`` replicates the weights, ``fsdp`` shards them; batches split over both."""


def check_mesh_shape(mesh_shape: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate ``mesh_shape``: two positive sizes, or ``None`` for the default.

    Raises:
        ValueError: It is anything else.
    """
    if mesh_shape is None:
        return None
    shape = tuple(mesh_shape)
    if len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(
            f"mesh_shape={mesh_shape!r} must give the sizes of the {AXES} mesh axes as two positive integers, "
            "e.g. mesh_shape=(1, 8) to shard over 8 devices or (2, 4) for 2 replicas each sharded over 4."
        )
    return (shape[0], shape[1])


def check_mesh_covers(mesh_shape: tuple[int, int], devices: int) -> None:
    """Check that the mesh has one position per device.

    Raises:
        ValueError: The product of the axis sizes is not the number of devices.
    """
    if mesh_shape[0] * mesh_shape[1] != devices:
        raise ValueError(
            f"mesh_shape={mesh_shape} has {mesh_shape[0] * mesh_shape[1]} positions, but there are {devices} devices. "
            f"Choose sizes whose product is {devices}, e.g. (1, {devices})."
        )


def build_mesh(mesh_shape: tuple[int, int], devices: int) -> Any:
    """Switch this process to SPMD mode and return the mesh over ``devices`` devices.

    Must run before the process creates any XLA tensor (torch_xla then replicates
    them, once, at a cost).
    """
    import numpy as np
    import torch_xla.distributed.spmd as xs
    import torch_xla.runtime as xr

    xr.use_spmd()
    mesh = xs.Mesh(np.arange(devices), mesh_shape, AXES)
    xs.set_global_mesh(mesh)
    return mesh


def parameter_spec(parameter: torch.Tensor) -> tuple[str | None, ...]:
    """The partition spec of a parameter: its largest dim over ``fsdp``, the other dims whole."""
    spec: list[str | None] = [None] * parameter.dim()
    if spec:
        spec[max(range(parameter.dim()), key=lambda dim: parameter.shape[dim])] = "fsdp"
    return tuple(spec)


def shard_parameters(module: nn.Module, mesh: Any) -> None:
    """Annotate every parameter of ``module`` (scalars stay replicated)."""
    import torch_xla.distributed.spmd as xs

    for parameter in module.parameters():
        if parameter.dim() > 0:
            xs.mark_sharding(parameter, mesh, parameter_spec(parameter))


def shard_batch(tensor: torch.Tensor, mesh: Any) -> torch.Tensor:
    """Annotate ``tensor`` to be split along dim 0 over every axis of the mesh."""
    import torch_xla.distributed.spmd as xs

    spec = (AXES, *([None] * (tensor.dim() - 1)))
    xs.mark_sharding(tensor, mesh, spec)
    return tensor
