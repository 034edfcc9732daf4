"""The script whose start-up the launch benchmark times: DDP on 2 CPU processes, one step.

Rank 0 prints ``FIRST_STEP <seconds>``: the wall time from ``FABRIC_BENCH_T0`` (set by the
benchmark just before it started the launcher) to the end of the first optimizer step.
"""

import os
import time

import torch

from fabric_core import Fabric

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))
fabric.backward(model(torch.randn(16, 32)).pow(2).mean())
optimizer.step()
if fabric.global_rank == 0:
    print(f"FIRST_STEP {time.time() - float(os.environ['FABRIC_BENCH_T0']):.4f}", flush=True)
