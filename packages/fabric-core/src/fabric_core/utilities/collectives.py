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
    """Gather equally shaped tensors from every process into a new leading dimension.

    With ``sync_grads`` the result stays in the autograd graph: each process's input gets
    the sum, over all processes, of the gradients that reach its slice.
    """
    tensor = tensor.contiguous()
    if sync_grads:
        return _DifferentiableAllGather.apply(tensor, group)
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor, group=group)
    return torch.stack(gathered)


class _DifferentiableAllGather(torch.autograd.Function):
    """``all_gather`` whose backward sums the gradients of each slice back to its source process.

    ``torch.distributed._functional_collectives``' autograd gather imports torch._dynamo on
    first use (seconds per process) and ``torch.distributed.nn.functional.all_gather`` is
    deprecated; this is the same computation with the plain collectives. The backward
    all-reduces the whole gradient and keeps this process's slice (a reduce-scatter, which
    gloo lacks, would move less data).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any | None) -> torch.Tensor:
        ctx.group = group
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, tensor, group=group)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def broadcast(obj: _T, src: int) -> _T:
    """Broadcast a tensor (in place on receivers) or any picklable object from ``src``."""
    if isinstance(obj, torch.Tensor):
        dist.broadcast(obj, src)
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src)
    return holder[0]
