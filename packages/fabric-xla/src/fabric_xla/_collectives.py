"""The XLA collectives behind the strategies' ``reduce``, ``all_gather``, ``broadcast`` and ``barrier``.

Each runs as an XLA collective between the processes of the job (one per device) and
follows fabric's conventions: a new leading dimension for ``all_gather``, ``"mean"`` as a
sum divided by the group size, any picklable object for ``broadcast``. ``group`` is an
XLA replica grouping, a list of equally sized lists of ranks (``[[0, 1], [2, 3]]``).
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Final, TypeVar

import torch

from fabric_xla._runtime import to_cpu, xla_device

__all__ = ["REDUCE_OPS", "all_gather", "all_reduce", "barrier", "broadcast", "rendezvous"]

_T = TypeVar("_T")

REDUCE_OPS: Final = {
    "sum": "sum",
    "mean": "sum",
    "avg": "sum",
    "max": "max",
    "min": "min",
    "product": "mul",
    "prod": "mul",
}
"""fabric's reduce operation names and the XLA reduce type each runs."""


def all_reduce(
    tensor: torch.Tensor, reduce_op: str, world_size: int, group: Any | None = None
) -> torch.Tensor:
    """Reduce ``tensor`` over the processes; the result is on the tensor's own device.

    Raises:
        ValueError: ``reduce_op`` is not one of `REDUCE_OPS`.
    """
    name = reduce_op.lower() if isinstance(reduce_op, str) else reduce_op
    if name not in REDUCE_OPS:
        raise ValueError(
            f"reduce_op={reduce_op!r} is not supported on XLA; use one of: {', '.join(REDUCE_OPS)}."
        )
    import torch_xla.core.xla_model as xm

    mean = name in ("mean", "avg")
    source = tensor.float() if mean and not torch.is_floating_point(tensor) else tensor
    reduced = xm.all_reduce(REDUCE_OPS[name], source.to(xla_device()), groups=group)
    if mean:
        reduced = reduced / (len(group[0]) if group else world_size)
    return reduced.to(tensor.device)


def all_gather(tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False) -> torch.Tensor:
    """Stack ``tensor`` from every process along a new leading dimension.

    With ``sync_grads=True`` the gather is differentiable: each process's slice receives the
    sum of the gradients that flowed into it on every process.

    Raises:
        ValueError: ``sync_grads=True`` was combined with a ``group`` (XLA's differentiable
            gather spans all processes).
    """
    stacked = tensor.to(xla_device()).unsqueeze(0)
    if sync_grads:
        if group is not None:
            raise ValueError("all_gather(sync_grads=True) gathers over every process on XLA; drop group=.")
        import torch_xla.core.functions as xf

        gathered = xf.all_gather(stacked, dim=0)
    else:
        import torch_xla.core.xla_model as xm

        gathered = xm.all_gather(stacked, dim=0, groups=group)
    return gathered.to(tensor.device)  # type: ignore[no-any-return,unused-ignore]


def broadcast(obj: _T, src: int, rank: int) -> _T:
    """``obj`` as process ``src`` has it, on every process.

    A tensor (equally shaped on every process) travels as an XLA collective and keeps its
    device; any other object is pickled on ``src`` (its tensors moved to the CPU) and
    exchanged through an XLA rendezvous, so its size may differ between processes.
    """
    import torch_xla.core.xla_model as xm

    if isinstance(obj, torch.Tensor):
        on_device = obj.to(xla_device()).clone()
        xm.collective_broadcast([on_device], root_ordinal=src)
        return on_device.to(obj.device)  # type: ignore[return-value]
    payload = b""
    if rank == src:
        buffer = io.BytesIO()
        torch.save(to_cpu(obj), buffer)
        payload = buffer.getvalue()
    received = rendezvous("fabric_xla.broadcast", payload)
    return torch.load(io.BytesIO(received[src]), weights_only=False)  # type: ignore[no-any-return,unused-ignore]


def barrier(name: str | None = None) -> None:
    """Wait until every process reaches the rendezvous ``name``."""
    rendezvous(name or "fabric_xla.barrier")


def rendezvous(tag: str, payload: bytes = b"") -> list[bytes]:
    """Every process's ``payload``, in rank order, once all of them reached ``tag`` (``xm.rendezvous``)."""
    import torch_xla.core.xla_model as xm

    with warnings.catch_warnings():
        # torch_xla 2.9's rendezvous calls its own deprecated xla_device(); nothing for users to change.
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(xm.rendezvous(tag, payload))
