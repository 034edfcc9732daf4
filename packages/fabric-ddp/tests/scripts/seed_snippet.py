"""The seed's DDP snippet on 2 CPU processes, and a DDPStrategy built by position in the seed's order.

The seed passes ``process_group_backend="nccl"`` (GPUs); on CPUs the equivalent is ``"gloo"``.
Each run checks on every rank that the keyword arguments reached the DDP module, the timeout
reached the process group and the communication hook (with its wrapper) was registered.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from fabric_core import Fabric
from fabric_ddp import DDPStrategy


def group_timeout() -> timedelta:
    """The timeout the default (gloo) process group was formed with."""
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))  # type: ignore[union-attr]
    return backend.options._timeout  # type: ignore[attr-defined,no-any-return]


def check(fabric: Fabric, timeout: timedelta, comm_hook: str | None) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    ddp = model._forward_module  # the DDP wrapper inside fabric's module wrapper
    assert isinstance(ddp, DistributedDataParallel), type(ddp)
    assert ddp.find_unused_parameters is False, ddp.find_unused_parameters
    assert ddp.gradient_as_bucket_view is True, ddp.gradient_as_bucket_view
    assert ddp.device_ids is None, ddp.device_ids
    assert ddp._get_ddp_logging_data().get("comm_hook") == comm_hook, ddp._get_ddp_logging_data()
    assert group_timeout() == timeout, group_timeout()
    assert dist.get_backend() == "gloo", dist.get_backend()
    for step in range(3):  # different data on each rank; the all-reduce keeps the replicas equal
        torch.manual_seed(100 * fabric.global_rank + step)
        fabric.backward(model(torch.randn(8, 4)).pow(2).mean())
        optimizer.step()
        optimizer.zero_grad()
    gathered = fabric.all_gather(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(gathered[0], gathered[1]), gathered
    if fabric.is_global_zero:
        print("run ok", timeout, comm_hook, flush=True)


def snippet(fabric: Fabric) -> None:
    check(fabric, timedelta(minutes=30), comm_hook=None)


def positional(fabric: Fabric) -> None:
    check(fabric, timedelta(minutes=7), comm_hook="fp16_compress_wrapper.<locals>.fp16_compress_wrapper_hook")


if __name__ == "__main__":
    # the seed's snippet as written, but for the backend and fabric.launch(fn)'s start method
    ddp_strategy = DDPStrategy(
        process_group_backend="gloo",
        timeout=timedelta(minutes=30),
        find_unused_parameters=False,  # Set via kwargs
        gradient_as_bucket_view=True,  # Set via kwargs
        start_method="fork",
    )
    Fabric(accelerator="cpu", strategy=ddp_strategy, devices=2).launch(snippet)

    cpu = torch.device("cpu")
    by_position = DDPStrategy(
        [cpu, cpu],  # parallel_devices
        None,  # cluster_environment
        None,  # checkpoint_io
        None,  # precision_plugin
        None,  # ddp_comm_state
        default_hooks.allreduce_hook,  # ddp_comm_hook
        default_hooks.fp16_compress_wrapper,  # ddp_comm_wrapper
        None,  # model_averaging_period
        "gloo",  # process_group_backend
        timedelta(minutes=7),  # timeout
        start_method="fork",
        find_unused_parameters=False,
        gradient_as_bucket_view=True,
    )
    Fabric(accelerator="cpu", strategy=by_position).launch(positional)
    print("seed snippet ok")
