"""Run under torchrun (2 CPU processes): one strategy's fabric loop against its hand-written loop.

Usage: torchrun --nproc-per-node 2 _distributed_target.py STRATEGY BLOCKS STEPS OUT.json

STRATEGY is ``ddp`` (``DistributedDataParallel``), ``fsdp`` (``fully_shard`` on every block,
then on the root) or ``deepspeed`` (``deepspeed.initialize`` with ZeRO stage 2, the very
config fabric's ``DeepSpeedStrategy(stage=2)`` built). Both loops train identical copies of
one model on the same batches in the same process group, in blocks of STEPS steps whose
order alternates (ABBA...), so drift of the machine affects both alike. Every block starts
after a barrier; its time is the slowest process's. Rank 0 writes the seconds per step of
every block, the losses of both loops and each process's peak resident memory.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from _loops import peak_rss_mib
from torch import nn

from fabric_core import Fabric

WIDTH = 256
BLOCKS_IN_MODEL = 3
BATCH = 32
LR = 0.01


class Block(nn.Module):
    """A residual MLP block: the unit FSDP shards."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.relu(self.up(x)))


def build() -> nn.Module:
    """The model, with the same weights on every call."""
    torch.manual_seed(0)
    return nn.Sequential(*(Block(WIDTH) for _ in range(BLOCKS_IN_MODEL)), nn.Linear(WIDTH, 1))


def fabric_strategy(name: str) -> Any:
    """What ``Fabric(strategy=...)`` gets for ``name``."""
    if name == "fsdp":
        from fabric_fsdp import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy={Block})
    if name == "deepspeed":
        from fabric_deepspeed import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=2)
    return name


Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fabric_step(fabric: Fabric) -> Step:
    """The loop's body through fabric."""
    model = build()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=LR))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def hand_step(name: str, fabric: Fabric) -> Step:
    """The loop's body written by hand for the strategy ``name`` (the process group exists already)."""
    model = build()
    if name == "deepspeed":
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=LR),
            config=copy.deepcopy(fabric.strategy.config),  # type: ignore[attr-defined]
            dist_init_required=False,
        )

        def ds_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = F.mse_loss(engine(x), y)
            engine.backward(loss)
            engine.step()
            return loss

        return ds_step
    if name == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model:
            if isinstance(block, Block):
                fully_shard(block)
        fully_shard(model, reshard_after_forward=False)
        wrapped: nn.Module = model
    else:
        wrapped = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=LR)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(wrapped(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def main() -> None:
    """Time the two loops and write the results (rank 0)."""
    name, blocks, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    torch.set_num_threads(1)
    fabric = Fabric(accelerator="cpu", strategy=fabric_strategy(name))
    fabric.launch()  # joins the processes torchrun started
    generator = torch.Generator().manual_seed(fabric.global_rank)
    batches = [(torch.randn(BATCH, WIDTH, generator=generator), torch.randn(BATCH, 1, generator=generator))]
    batches *= 4
    loops = {"fabric": fabric_step(fabric), "hand": hand_step(name, fabric)}
    losses: dict[str, list[float]] = {variant: [] for variant in loops}
    seconds: dict[str, list[float]] = {variant: [] for variant in loops}

    def block(variant: str, record: bool) -> None:
        dist.barrier()
        start = time.perf_counter()
        for index in range(steps):
            loss = loops[variant](*batches[index % len(batches)])
        elapsed = (time.perf_counter() - start) / steps
        if record:
            seconds[variant].append(elapsed)
            losses[variant].append(float(loss.detach()))

    for variant in ("hand", "fabric", "fabric", "hand"):  # warm-up
        block(variant, record=False)
    for index in range(blocks):
        order = ("hand", "fabric") if index % 2 == 0 else ("fabric", "hand")
        for variant in order:
            block(variant, record=True)
    slowest = {
        variant: fabric.all_reduce(torch.tensor(values, dtype=torch.float64), reduce_op="max").tolist()
        for variant, values in seconds.items()
    }
    peak_mib = peak_rss_mib()
    peaks = fabric.all_gather(torch.tensor(peak_mib, dtype=torch.float64)).tolist()
    if fabric.global_rank == 0:
        document = {"strategy": name, "seconds": slowest, "losses": losses, "peak_rss_mib": peaks}
        out.write_text(json.dumps(document))


if __name__ == "__main__":
    main()
