"""How FSDPStrategy and ModelParallelStrategy lay a model out in memory, per rank (a dry run).

FSDP2's ``fully_shard`` splits every parameter on dim 0 across the shard axis of the mesh:
each rank keeps ``ceil(dim0 / N)`` rows (the shards are padded to that size), the gradient
of the same shape, and optimizer state built ``zeros_like`` the shard. Rank 0 holds the
most. Hybrid sharding replicates those shards across the replicate axis; ``NO_SHARD`` is
a shard axis of size 1.

A ``ModelParallelStrategy`` is estimated by sharding the meta-device model exactly as
``fabric.setup`` would (its ``parallelize_fn`` or the default plan, on the strategy's own
device mesh, pipeline stages included) over an in-process *fake* process group (no other
process, no communication, nothing allocated), then reading rank 0's local shards. Its
layout is whatever the plan makes it, so no formula is assumed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from fabric_core.utilities.memory_layout import (
    ByteTally,
    MemoryEstimate,
    check_optimizer_kind,
    default_dtype_of,
    planned_world_size,
    trainable,
)

if TYPE_CHECKING:
    from fabric_fsdp._sharded import ShardedStrategy
    from fabric_fsdp.model_parallel import ModelParallelStrategy

__all__ = ["estimate_sharded", "fsdp_notes", "shard_rows"]


def shard_rows(rows: int, shards: int) -> int:
    """The rows of one rank's (padded) shard of a parameter with ``rows`` rows: ``ceil(rows / shards)``."""
    return math.ceil(rows / shards)


def estimate_sharded(strategy: ShardedStrategy, module: nn.Module, optimizer: str) -> MemoryEstimate:
    """The per-rank estimate for an FSDP or model-parallel strategy (see the module docstring)."""
    from fabric_fsdp.fsdp import FSDPStrategy
    from fabric_fsdp.model_parallel import ModelParallelStrategy

    check_optimizer_kind(optimizer)
    world = planned_world_size(strategy)
    if isinstance(strategy, ModelParallelStrategy):
        return _traced(strategy, module, optimizer, world)
    shape = strategy._mesh_shape() if isinstance(strategy, FSDPStrategy) else (world,)
    notes = fsdp_notes(
        shape, getattr(strategy, "_fully_shard_kwargs", {}), getattr(strategy, "_cpu_offload", False)
    )
    return _dim0_sharded(strategy, module, optimizer, world, shape[-1], notes)


def fsdp_notes(
    shape: tuple[int, ...], fully_shard_kwargs: dict[str, object], cpu_offload: object
) -> list[str]:
    """What an FSDP estimate over a mesh of ``shape`` (``(shard,)`` or ``(replicate, shard)``) assumes."""
    shards = shape[-1]
    if shards == 1:
        notes = ["NO_SHARD: every process holds whole parameters, gradients and optimizer state"]
    else:
        notes = [
            f"FSDP2: each parameter dim 0 split over {shards} processes (ceil(dim0/{shards}) rows per rank)"
        ]
        if len(shape) == 2 and shape[0] > 1:
            notes.append(
                f"hybrid sharding: the shards are replicated across {shape[0]} groups of {shards} processes"
            )
    unmodelled = sorted({"shard_placement_fn", "ignored_params"} & set(fully_shard_kwargs))
    if unmodelled:
        notes.append(
            f"{' and '.join(unmodelled)} not modelled: every parameter is counted as sharded on dim 0"
        )
    if cpu_offload is not False:
        notes.append(
            "cpu_offload: parameters, gradients and optimizer state are held in CPU memory, not on the device"
        )
    return notes


def _dim0_sharded(
    strategy: ShardedStrategy, module: nn.Module, optimizer: str, world: int, shards: int, notes: list[str]
) -> MemoryEstimate:
    dtype_of = default_dtype_of(strategy.precision)
    tally = ByteTally(optimizer)
    for param in trainable(module):
        rows = param.shape[0] if param.dim() > 0 else 1
        local = shard_rows(rows, shards) * (param.numel() // rows if rows else 0)
        tally.add(local, dtype_of(param).itemsize, param.requires_grad)
    return tally.estimate(strategy, world, notes)


def _traced(strategy: ModelParallelStrategy, module: nn.Module, optimizer: str, world: int) -> MemoryEstimate:
    """Shard the meta-device model as ``fabric.setup`` would, over a fake process group; count rank 0's shards."""
    from torch.distributed.tensor import DTensor

    try:  # torch's in-process fake backend: collectives return at once and move nothing
        from torch.testing._internal.distributed.fake_pg import FakeStore
    except ImportError as error:  # pragma: no cover - present in every torch fabric-fsdp supports
        raise RuntimeError(
            f"Estimating ModelParallelStrategy needs torch's fake process group ({error}). Upgrade torch."
        ) from None

    if any(not p.is_meta for p in module.parameters()):
        raise ValueError(
            "Estimating ModelParallelStrategy runs its parallelization on the model, which shards it in place. Pass "
            "a function that builds the model (it is built on the meta device) instead of a model."
        )
    if dist.is_initialized():
        raise RuntimeError(
            "Estimating ModelParallelStrategy needs a process without a process group (it shards the model over a "
            "fake one). Call estimate_memory before the run starts, or use `fabric estimate` from a shell."
        )
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        sharded = strategy._parallelize(module)
        dtype_of = default_dtype_of(strategy.precision)
        tally = ByteTally(optimizer)
        for param in trainable(sharded):
            local: torch.Tensor = param.to_local() if isinstance(param, DTensor) else param
            tally.add(local.numel(), dtype_of(local).itemsize, param.requires_grad)
        mesh = dict(zip(strategy.device_mesh.mesh_dim_names or (), strategy.device_mesh.shape, strict=True))
    finally:
        strategy._device_mesh = None  # the fake group's mesh must not outlive it
        dist.destroy_process_group()
    plan = (
        "parallelize_fn"
        if strategy._parallelize_fn is not None
        else "the default plan (FSDP2 over the data axis)"
    )
    axes = " x ".join(f"{name}={size}" for name, size in mesh.items())
    notes = [
        f"{plan} was run on the meta-device model over a fake {axes} mesh (no processes, no communication); "
        "figures are rank 0's local shards"
    ]
    if strategy._parallelize_fn is not None:
        notes.append(
            "a MixedPrecisionPolicy in parallelize_fn changes only the gathered dtype, not the shards counted"
        )
    return tally.estimate(strategy, world, notes)
