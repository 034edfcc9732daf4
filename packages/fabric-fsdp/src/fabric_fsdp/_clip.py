"""Gradient clipping when gradients are DTensor shards (FSDP2, tensor parallel, or both).

The total norm must count every element of every gradient exactly once, although each
process holds only shards, and some dimensions of a mesh hold replicas. DTensor's own norm
kernels know the placements, but can combine only tensors on the same mesh; so norms are
taken per mesh, made whole with ``full_tensor()`` (an all-reduce), and combined locally.
Scaling then touches only local shards, which needs no communication.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

__all__ = ["clip_grad_norm", "clip_grad_value"]


def clip_grad_norm(
    parameters: Iterable[torch.Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = True,
    across: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Scale gradients so that their joint ``norm_type`` norm is at most ``max_norm``.

    Every process must call it with the same parameters (it communicates once per mesh).
    ``across`` is a group of processes that hold *different* parameters (the stages of a
    pipeline): their norms are combined into one, so the clipping is that of the whole model.

    Returns:
        The total norm before clipping, a plain tensor equal on every process.

    Raises:
        RuntimeError: The norm is not finite and ``error_if_nonfinite`` is true.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads and across is None:
        return torch.tensor(0.0)
    norm_type = float(norm_type)
    total = _total_norm(grads, norm_type) if grads else torch.tensor(0.0)
    if across is not None:
        total = _combine(total, norm_type, across)
    if error_if_nonfinite and not torch.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} of the gradients is non-finite, so it cannot be clipped. "
            "Pass error_if_nonfinite=False to fabric.clip_gradients() to clip anyway."
        )
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    with torch.no_grad():
        for grad in grads:
            local = _local(grad)
            local.mul_(coefficient.to(device=local.device, dtype=local.dtype))
    return total


def clip_grad_value(parameters: Iterable[torch.Tensor], clip_val: float) -> None:
    """Clamp every gradient element to ``[-clip_val, clip_val]`` (shard by shard, no communication)."""
    with torch.no_grad():
        for parameter in parameters:
            if parameter.grad is not None:
                _local(parameter.grad).clamp_(-clip_val, clip_val)


def _total_norm(grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    by_mesh: dict[object, list[torch.Tensor]] = {}
    for grad in grads:
        key = grad.device_mesh if isinstance(grad, DTensor) else None
        by_mesh.setdefault(key, []).append(grad)
    norms = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm(group, norm_type, error_if_nonfinite=False)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norms.append(norm.float())
    stacked = torch.stack([norm.to(norms[0].device) for norm in norms])
    if norm_type == float("inf"):
        return stacked.max()
    return stacked.pow(norm_type).sum().pow(1.0 / norm_type)


def _combine(norm: torch.Tensor, norm_type: float, group: dist.ProcessGroup) -> torch.Tensor:
    """The norm over every process of ``group``, each holding the norm of its own gradients."""
    if norm_type == float("inf"):
        dist.all_reduce(norm, op=dist.ReduceOp.MAX, group=group)
        return norm
    powered = norm.pow(norm_type)
    dist.all_reduce(powered, group=group)
    return powered.pow(1.0 / norm_type)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
