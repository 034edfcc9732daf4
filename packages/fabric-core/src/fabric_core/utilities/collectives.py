"""Thin helpers over ``torch.distributed`` collectives with fabric's argument conventions.

Each runs inside `watched`: one that times
out fails on every rank with the ranks that did not arrive and their stacks.
"""

from __future__ import annotations

import difflib
from typing import Any, Final, TypeVar

import torch
import torch.distributed as dist

from fabric_core.utilities.collective_watch import watched

_T = TypeVar("_T")

REDUCE_OPS: Final[dict[str, Any]] = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,
    "avg": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "product": dist.ReduceOp.PRODUCT,
    "prod": dist.ReduceOp.PRODUCT,
}
"""The ``reduce_op`` names and the ``torch.distributed`` operation each runs (``"mean"`` sums, then divides)."""


def check_reduce_op(reduce_op: object) -> None:
    """Refuse a ``reduce_op`` that no collective understands, whatever the number of processes.

    Accepted: ``None`` (the strategy's default), a name of `REDUCE_OPS` in any case, or a
    ``torch.distributed.ReduceOp``. With one process nothing is reduced, so without this check
    a typo would pass unnoticed until the run has several.

    Raises:
        ValueError: An unknown name (the message suggests the closest one).
        TypeError: Neither a name nor a ``ReduceOp``.
    """
    if reduce_op is None or isinstance(reduce_op, (dist.ReduceOp, dist.ReduceOp.RedOpType)):
        return
    if not isinstance(reduce_op, str):
        raise TypeError(
            f"reduce_op={reduce_op!r} must be an operation name ({', '.join(map(repr, REDUCE_OPS))}) or a "
            "torch.distributed.ReduceOp."
        )
    if reduce_op.lower() not in REDUCE_OPS:
        close = difflib.get_close_matches(reduce_op.lower(), list(REDUCE_OPS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"reduce_op={reduce_op!r} is not supported; use one of: {', '.join(REDUCE_OPS)}.{hint}"
        )


def is_distributed() -> bool:
    """Whether a default process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, group: Any | None, reduce_op: str | dist.ReduceOp) -> torch.Tensor:
    """All-reduce in place; ``"mean"`` sums then divides (works on every backend, gloo included).

    Raises:
        ValueError: ``reduce_op`` is not a known operation name.
    """
    op: Any
    check_reduce_op(reduce_op)
    if isinstance(reduce_op, str):
        op = REDUCE_OPS[reduce_op.lower()]
        mean = reduce_op.lower() in ("mean", "avg")
    else:
        op, mean = reduce_op, False
    if mean and not torch.is_floating_point(tensor):
        tensor = tensor.float()
    with watched("all_reduce"):
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
    with watched("all_gather"):
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
    with watched("broadcast"):
        if isinstance(obj, torch.Tensor):
            dist.broadcast(obj, src)
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src)
        return holder[0]


def barrier() -> None:
    """Wait for every process of the default group."""
    with watched("barrier"):
        dist.barrier()
