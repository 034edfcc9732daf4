"""DDP with a gradient-compression comm hook, and post-local SGD with model averaging."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)

from fabric_core import Fabric
from fabric_ddp import DDPStrategy


def setup(fabric: Fabric) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))


def steps(
    fabric: Fabric, model: torch.nn.Module, optimizer: torch.optim.Optimizer, first: int, count: int
) -> None:
    for step in range(first, first + count):
        torch.manual_seed(100 * fabric.global_rank + step)  # different data on each rank
        fabric.backward(model(torch.randn(8, 4)).pow(2).mean())
        optimizer.step()
        optimizer.zero_grad()


def same_on_all_ranks(fabric: Fabric, model: torch.nn.Module) -> bool:
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = fabric.all_gather(flat)
    return bool(torch.equal(gathered[0], gathered[1]))


def compressed(fabric: Fabric) -> None:
    model, optimizer = setup(fabric)
    steps(fabric, model, optimizer, 0, 3)
    assert same_on_all_ranks(fabric, model), "compressed all-reduce must keep the replicas equal"


def local_sgd(fabric: Fabric) -> None:
    # Steps 0-1 all-reduce gradients (warm-up); from step 2 on each replica steps locally and
    # the parameters are averaged after steps 2, 4, 6, ...
    model, optimizer = setup(fabric)
    steps(fabric, model, optimizer, 0, 4)
    assert not same_on_all_ranks(fabric, model), "after a local step the replicas differ"
    steps(fabric, model, optimizer, 4, 1)
    assert same_on_all_ranks(fabric, model), "the averaging step makes the replicas equal again"


if __name__ == "__main__":
    hook = DDPStrategy(ddp_comm_hook=default_hooks.fp16_compress_hook, start_method="fork")
    Fabric(accelerator="cpu", devices=2, strategy=hook).launch(compressed)
    # a hook with a wrapper (allreduce_hook + fp16_compress_wrapper) runs in seed_snippet.py
    state = PostLocalSGDState(
        process_group=None, subgroup=None, start_localSGD_iter=2, post_local_gradient_allreduce=False
    )
    averaging = DDPStrategy(
        ddp_comm_state=state, ddp_comm_hook=post_localSGD_hook, model_averaging_period=2, start_method="fork"
    )
    Fabric(accelerator="cpu", devices=2, strategy=averaging).launch(local_sgd)
    print("hooks ok")
