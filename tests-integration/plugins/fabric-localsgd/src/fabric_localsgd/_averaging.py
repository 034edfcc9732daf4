"""Averaging and broadcasting many tensors with one collective per device and dtype."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = ["average_", "broadcast_"]


def _buckets(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The tensors without duplicates, grouped by (device, dtype) in first-seen order."""
    seen: set[int] = set()
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            buckets.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    return list(buckets.values())


def _flat(bucket: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([tensor.detach().reshape(-1) for tensor in bucket])


def _unflatten_into(flat: torch.Tensor, bucket: list[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for tensor in bucket:
            count = tensor.numel()
            tensor.copy_(flat[offset : offset + count].view_as(tensor))
            offset += count


def average_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace every tensor, in place, by its mean over all processes.

    Every process must pass tensors of the same shapes and dtypes in the same order.
    """
    world_size = dist.get_world_size()
    for bucket in _buckets(tensors):
        flat = _flat(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        _unflatten_into(flat.div_(world_size), bucket)


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor, in place, with process ``src``'s copy."""
    for bucket in _buckets(tensors):
        flat = _flat(bucket)
        dist.broadcast(flat, src)
        _unflatten_into(flat, bucket)
