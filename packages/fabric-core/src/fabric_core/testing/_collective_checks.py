"""Checks of the process layout and the collectives, against ``torch.distributed`` semantics.

Every rank knows what every other rank contributes (the inputs are a function of the rank),
so each rank computes the expected result itself and compares.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from fabric_core.testing._expect import Expect
from fabric_core.testing._plan import Plan

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = [
    "check_all_gather",
    "check_all_gather_sync_grads",
    "check_all_reduce",
    "check_barrier",
    "check_broadcast",
    "check_processes",
    "verify_processes",
]

BARRIER_DELAY_S = 0.5
"""How long rank 0 arrives late at the barrier that `check_barrier` times."""


def _contribution(rank: int) -> torch.Tensor:
    """What rank ``rank`` puts into a reduction: signs and sizes that tell sum, max and min apart."""
    return torch.tensor([1.0, -2.0, 0.5, 3.0]) * (rank + 1) + torch.tensor([0.0, 0.0, 0.0, -4.0 * rank])


def _gathered(rank: int) -> torch.Tensor:
    """What rank ``rank`` puts into a gather: a 2x3 block numbered by rank."""
    return torch.arange(6, dtype=torch.float32).reshape(2, 3) + 10 * rank


def check_processes(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """World size and ranks are consistent, and several processes share a process group."""
    expect = Expect()
    rank, world = fabric.global_rank, fabric.world_size
    expect.true(world == plan.world_size, f"fabric.world_size is {world}, expected {plan.world_size}")
    expect.true(
        0 <= rank < plan.world_size, f"fabric.global_rank is {rank}, outside 0..{plan.world_size - 1}"
    )
    expect.true(
        0 <= fabric.local_rank <= rank,
        f"fabric.local_rank {fabric.local_rank} is not in 0..global_rank {rank}",
    )
    expect.true(fabric.is_global_zero == (rank == 0), f"fabric.is_global_zero is wrong on rank {rank}")
    initialized = dist.is_available() and dist.is_initialized()
    if plan.world_size > 1:
        expect.true(initialized, "torch.distributed has no default process group after fabric.launch()")
        if initialized:
            expect.true(
                dist.get_world_size() == world and dist.get_rank() == rank,
                f"torch.distributed says rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"fabric says rank {rank} of {world}",
            )
    expect.raise_if_failed()
    return {"global_rank": rank, "pid": os.getpid(), "device": str(fabric.device)}


def verify_processes(observations: dict[int, dict[str, Any]], plan: Plan) -> list[str]:
    """Across ranks: every global rank appears once, each in its own process."""
    ranks = sorted(obs["global_rank"] for obs in observations.values())
    problems = []
    if ranks != list(range(plan.world_size)):
        problems.append(
            f"the processes report global ranks {ranks}, expected 0..{plan.world_size - 1} once each"
        )
    pids = [obs["pid"] for obs in observations.values()]
    if plan.world_size > 1 and len(set(pids)) != len(pids):
        problems.append("several ranks ran in the same process")
    return problems


def check_all_reduce(fabric: Fabric, plan: Plan) -> None:
    """``all_reduce`` with sum, mean, max and min equals the reduction of every rank's tensor.

    Python numbers, alone and inside containers, are reduced too (as tensors), never
    returned unchanged.
    """
    expect = Expect()
    rank, device = fabric.global_rank, fabric.device
    everyone = torch.stack([_contribution(r) for r in range(plan.world_size)])
    expected = {
        "sum": everyone.sum(0),
        "mean": everyone.mean(0),
        "max": everyone.max(0).values,
        "min": everyone.min(0).values,
    }
    results = {op: fabric.all_reduce(_contribution(rank).to(device), reduce_op=op) for op in expected}
    integers = fabric.all_reduce(torch.tensor([rank + 1, 7], device=device), reduce_op="sum")
    nested = fabric.all_reduce(
        {"a": _contribution(rank).to(device), "b": [torch.ones(2, device=device)]}, reduce_op="sum"
    )
    for op, result in results.items():
        expect.close(result, expected[op], 1e-6, f"all_reduce(reduce_op='{op}')")
        if isinstance(result, torch.Tensor):
            expect.true(
                result.device == device,
                f"all_reduce(reduce_op='{op}') returned on {result.device}, not {device}",
            )
    total = plan.world_size * (plan.world_size + 1) // 2
    expect.close(
        integers, torch.tensor([total, 7 * plan.world_size]), 0, "all_reduce of an integer tensor (sum)"
    )
    number = fabric.all_reduce(float(rank + 1), reduce_op="mean")
    numbers = fabric.all_reduce({"count": rank + 1, "values": [float(rank), 2.0]}, reduce_op="sum")
    expect.true(isinstance(number, torch.Tensor), f"all_reduce(float) returned a {type(number).__name__}")
    expect.close(number, torch.tensor((plan.world_size + 1) / 2), 1e-6, "all_reduce of a Python float (mean)")
    if isinstance(numbers, dict) and isinstance(numbers.get("values"), list):
        expect.close(numbers["count"], torch.tensor(total), 0, "all_reduce of a Python int in a dict (sum)")
        expect.close(
            numbers["values"][0],
            torch.tensor(float(total - plan.world_size)),
            1e-6,
            "all_reduce of a Python float in a list (sum)",
        )
    else:
        expect.true(
            False, f"all_reduce of {{'count': int, 'values': [float]}} returned {type(numbers).__name__}"
        )
    if isinstance(nested, dict) and isinstance(nested.get("b"), list):
        expect.close(nested["a"], expected["sum"], 1e-6, "all_reduce of a dict's tensor (sum)")
        expect.close(nested["b"][0], torch.full((2,), float(plan.world_size)), 1e-6, "all_reduce in a list")
    else:
        expect.true(False, f"all_reduce of {{'a': tensor, 'b': [tensor]}} returned {type(nested).__name__}")
    expect.raise_if_failed()


def check_all_gather(fabric: Fabric, plan: Plan) -> None:
    """``all_gather`` stacks every rank's tensor along a new leading dimension, in rank order."""
    expect = Expect()
    rank, device = fabric.global_rank, fabric.device
    expected = torch.stack([_gathered(r) for r in range(plan.world_size)])
    result = fabric.all_gather(_gathered(rank).to(device))
    scalars = fabric.all_gather(torch.tensor(float(rank), device=device))
    number = fabric.all_gather(float(rank))
    expect.close(
        number, torch.arange(plan.world_size, dtype=torch.float32), 0, "all_gather of a Python float"
    )
    integers = fabric.all_gather(torch.tensor([rank, -rank], device=device))
    nested = fabric.all_gather({"x": _gathered(rank).to(device), "y": [torch.tensor([rank], device=device)]})
    expect.close(result, expected, 0, "all_gather of a 2x3 tensor")
    expect.close(scalars, torch.arange(plan.world_size, dtype=torch.float32), 0, "all_gather of a scalar")
    expect.close(
        integers,
        torch.tensor([[r, -r] for r in range(plan.world_size)]),
        0,
        "all_gather of an integer tensor",
    )
    if isinstance(integers, torch.Tensor):
        expect.true(integers.dtype == torch.int64, f"all_gather turned int64 into {integers.dtype}")
    if isinstance(nested, dict) and isinstance(nested.get("y"), list):
        expect.close(nested["x"], expected, 0, "all_gather of a dict's tensor")
        expect.close(nested["y"][0], torch.arange(plan.world_size).unsqueeze(1), 0, "all_gather in a list")
    else:
        expect.true(False, f"all_gather of {{'x': tensor, 'y': [tensor]}} returned {type(nested).__name__}")
    expect.raise_if_failed()


def check_all_gather_sync_grads(fabric: Fabric, plan: Plan) -> None:
    """``all_gather(sync_grads=True)`` is differentiable, with ``torch.distributed.nn`` semantics.

    Each rank's input gets the sum of the gradients that every rank's loss sends to its slice.
    """
    expect = Expect()
    rank, world = fabric.global_rank, plan.world_size
    x = torch.full((3,), float(rank + 1), device=fabric.device, requires_grad=True)
    gathered = fabric.all_gather(x, sync_grads=True)
    ok = isinstance(gathered, torch.Tensor) and gathered.requires_grad
    expect.true(ok, "all_gather(sync_grads=True) returned a tensor outside the autograd graph")
    # Rank k's loss weighs slice r by (k + 1) * (r + 1), so x_r's gradient is (r + 1) * sum_k (k + 1).
    weights = (rank + 1) * torch.arange(1, world + 1, dtype=torch.float32, device=fabric.device)
    if ok:
        (gathered.sum(dim=-1) * weights).sum().backward()
    expected_values = torch.stack([torch.full((3,), float(r + 1)) for r in range(world)])
    expect.close(gathered, expected_values, 0, "all_gather(sync_grads=True) values")
    expected_grad = torch.full((3,), (rank + 1) * world * (world + 1) / 2)
    if ok:
        expect.close(x.grad, expected_grad, 1e-6, "gradient that all_gather(sync_grads=True) sends back")
    expect.raise_if_failed()


def check_broadcast(fabric: Fabric, plan: Plan) -> None:
    """``broadcast`` gives every rank the source rank's tensor or object."""
    expect = Expect()
    rank, device, last = fabric.global_rank, fabric.device, plan.world_size - 1
    from_first = fabric.broadcast(_gathered(rank).to(device), src=0)
    from_last = fabric.broadcast(_gathered(rank).to(device), src=last)
    obj = fabric.broadcast({"rank": rank, "items": [rank, "x" * rank], "pair": (rank, None)}, src=0)
    none_or_value = fabric.broadcast(None if rank == 0 else rank, src=0)
    expect.close(from_first, _gathered(0), 0, "broadcast of a tensor from rank 0")
    expect.close(from_last, _gathered(last), 0, f"broadcast of a tensor from rank {last}")
    if isinstance(from_first, torch.Tensor):
        expect.true(from_first.device == device, f"broadcast moved the tensor to {from_first.device}")
    wanted = {"rank": 0, "items": [0, ""], "pair": (0, None)}
    expect.true(obj == wanted, f"broadcast of a dict from rank 0 gave {obj!r}, expected {wanted!r}")
    expect.true(none_or_value is None, f"broadcast of None from rank 0 gave {none_or_value!r}")
    expect.raise_if_failed()


def check_barrier(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """``barrier`` holds every rank until the last one arrives (rank 0 arrives late on purpose)."""
    expect = Expect()
    fabric.barrier()
    start = time.monotonic()
    if fabric.global_rank == 0 and plan.world_size > 1:
        time.sleep(BARRIER_DELAY_S)
    fabric.barrier("conformance")
    waited = time.monotonic() - start
    if fabric.global_rank != 0:
        expect.true(
            waited >= 0.8 * BARRIER_DELAY_S,
            f"barrier returned after {waited:.3f} s although rank 0 arrived {BARRIER_DELAY_S} s late",
        )
    expect.raise_if_failed()
    return {"waited_s": round(waited, 3)}
