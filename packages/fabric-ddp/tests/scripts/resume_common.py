"""The data and optimizer of resume.py (the model is common.py's), and the one-process reference it must match."""

import torch
from common import PER_RANK_BATCH as PER_RANK
from common import WORLD_SIZE, model
from torch import nn

__all__ = ["STEPS", "batch", "loss_of", "model", "optimizer_of", "reference_parameters"]

STEPS = 40


def optimizer_of(net: nn.Module) -> torch.optim.Optimizer:
    # momentum: the optimizer's state must be restored too, not only the weights
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def batch(step: int, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch: all of it (rank None), or the rank's part of it."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(PER_RANK * WORLD_SIZE, 8, generator=generator)
    y = torch.randn(PER_RANK * WORLD_SIZE, 1, generator=generator)
    if rank is None:
        return x, y
    return x[rank * PER_RANK : (rank + 1) * PER_RANK], y[rank * PER_RANK : (rank + 1) * PER_RANK]


def loss_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(net(x), y)


def reference_parameters() -> dict[str, torch.Tensor]:
    """STEPS uninterrupted steps in one process on the whole batch."""
    net = model()
    optimizer = optimizer_of(net)
    for step in range(STEPS):
        x, y = batch(step)
        loss_of(net, x, y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
