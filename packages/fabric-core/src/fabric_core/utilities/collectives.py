"""Thin helpers over ``torch.distributed`` collectives with fabric's argument conventions."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as dist

_T = TypeVar("_T")

_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,
    "avg": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "product": dist.ReduceOp.PRODUCT,
    "prod": dist.ReduceOp.PRODUCT,
}


def is_distributed() -> bool:
    """Whether a default process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, group: Any | None, reduce_op: str | dist.ReduceOp) -> torch.Tensor:
    """All-reduce in place; ``"mean"`` sums then divides (works on every backend, gloo included).

    Raises:
        ValueError: ``reduce_op`` is not a known operation name.
    """
    op: Any
    if isinstance(reduce_op, str):
        op = _OPS.get(reduce_op.lower())
        if op is None:
            raise ValueError(f"reduce_op={reduce_op!r} is not supported; use one of: {', '.join(_OPS)}.")
        mean = reduce_op.lower() in ("mean", "avg")
    else:
        op, mean = reduce_op, False
    if mean and not torch.is_floating_point(tensor):
        tensor = tensor.float()
    dist.all_reduce(tensor, op=op, group=group)
    if mean:
        tensor.div_(dist.get_world_size(group))
    return tensor


def all_gather(tensor: torch.Tensor, group: Any | None, sync_grads: bool) -> torch.Tensor:
    """Gather equally shaped tensors from every process into a new leading dimension."""
    tensor = tensor.contiguous()
    if sync_grads:
        import torch.distributed._functional_collectives as funcol

        # Differentiable: backward reduce-scatters the gradients to their source ranks.
        gather: Any = getattr(funcol, "all_gather_single_autograd", None) or funcol.all_gather_tensor_autograd
        gathered = gather(tensor.unsqueeze(0), 0, group or dist.group.WORLD)
        return funcol.wait_tensor(gathered)
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor, group=group)
    return torch.stack(gathered)


def broadcast(obj: _T, src: int) -> _T:
    """Broadcast a tensor (in place on receivers) or any picklable object from ``src``."""
    if isinstance(obj, torch.Tensor):
        dist.broadcast(obj, src)
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src)
    return holder[0]
