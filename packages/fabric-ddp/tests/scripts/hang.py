"""Rank 1 skips an all_reduce and goes on evaluating; rank 0 waits in it until the timeout.

Usage: fabric run --devices 2 hang.py MARKER   (MARKER only tags the processes for the test)
"""

import time
from datetime import timedelta

import torch

from fabric_core import Fabric
from fabric_ddp import DDPStrategy


def evaluate() -> None:
    time.sleep(60)  # far longer than the timeout: rank 1 never reaches the all_reduce


fabric = Fabric(accelerator="cpu", devices=2, strategy=DDPStrategy(timeout=timedelta(seconds=3)))
fabric.launch()
fabric.all_reduce(torch.ones(1))  # both ranks: collective #1
if fabric.global_rank == 1:
    evaluate()
fabric.all_reduce(torch.ones(1))  # only rank 0 gets here
