"""Run under torchrun (2 processes): time the Fabric DDP loop against the hand-written one.

Both loops train identical copies of one model on the same data in the same process
group, in alternating blocks of steps, so drift affects both alike. Rank 0 prints one
JSON line with the per-step seconds of every block.
"""

import json
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fabric_core import Fabric

BLOCKS = int(sys.argv[1])
STEPS = int(sys.argv[2])


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )


fabric = Fabric(accelerator="cpu", strategy="ddp")  # joins the processes torchrun started
fabric.launch()
torch.manual_seed(fabric.global_rank)
batches = [(torch.randn(64, 256), torch.randint(0, 10, (64,))) for _ in range(8)]

plain = DistributedDataParallel(make_model())
plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.01)
model = make_model()
model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))


def plain_block() -> float:
    start = time.perf_counter()
    for step in range(STEPS):
        x, y = batches[step % len(batches)]
        loss = torch.nn.functional.cross_entropy(plain(x), y)
        loss.backward()
        plain_optimizer.step()
        plain_optimizer.zero_grad()
    return (time.perf_counter() - start) / STEPS


def fabric_block() -> float:
    start = time.perf_counter()
    for step in range(STEPS):
        x, y = batches[step % len(batches)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / STEPS


plain_block(), fabric_block()  # warm-up
results = {"plain": [], "fabric": []}
for block in range(BLOCKS):
    first, second = (plain_block, fabric_block) if block % 2 == 0 else (fabric_block, plain_block)
    for run in (first, second):
        results["plain" if run is plain_block else "fabric"].append(run())
dist.barrier()
if fabric.global_rank == 0:
    print("RESULT " + json.dumps(results), flush=True)
