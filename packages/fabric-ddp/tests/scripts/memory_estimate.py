"""Real per-rank bytes of parameters, gradients and optimizer state under DDP (2 forked processes).

Usage: python memory_estimate.py OUT_DIR

Rank 0 writes OUT_DIR/<optimizer kind>.json after one backward and one step, for the test to
compare with ``estimate_memory``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from fabric_core import Fabric

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
}


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(512, 257), nn.Tanh(), nn.Linear(257, 3))


def nbytes(tensors: Iterable[object]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def measure(fabric: Fabric, out: Path) -> None:
    for kind, make_optimizer in OPTIMIZERS.items():
        net = build()
        model, optimizer = fabric.setup(net, make_optimizer(net.parameters()))
        params = list(model.parameters())
        fabric.backward(model(torch.randn(4, 512)).square().mean())
        gradients = nbytes(p.grad for p in params)
        optimizer.step()
        state = nbytes(v for s in optimizer.state.values() for v in s.values())
        if fabric.is_global_zero:
            (out / f"{kind}.json").write_text(
                json.dumps({"parameters": nbytes(params), "gradients": gradients, "optimizer": state})
            )
        fabric.barrier()


if __name__ == "__main__":
    Fabric(accelerator="cpu", devices=2, strategy="ddp_fork").launch(measure, Path(sys.argv[1]))
