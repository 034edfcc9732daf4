"""Train a small regression model with the strategy `fabric run` chooses, and report how it went.

    fabric run --accelerator cpu --devices 2 --strategy localsgd examples/train.py result.json

The script names no strategy: `fabric run --strategy` picks it. Rank 0 writes the first and
last epoch's loss, the strategy, the world size and how far the replicas are apart at the end.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric

EPOCHS = 4


def main(output: str) -> None:
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    fabric.seed_everything(0)
    x = torch.randn(256, 8)
    y = torch.tanh(2 * x @ (torch.randn(8, 1) / 8**0.5))
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True))
    epoch_losses = []
    for _ in range(EPOCHS):
        total = torch.zeros(())
        for xb, yb in loader:
            loss = nn.functional.mse_loss(model(xb), yb)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            total += loss.detach()
        epoch_losses.append(float(fabric.all_reduce(total / len(loader), reduce_op="mean")))
    parameters = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    replicas = fabric.all_gather(parameters)
    spread = float((replicas - replicas[0]).abs().max())
    if fabric.is_global_zero:
        report = {
            "strategy": type(fabric.strategy).__name__,
            "world_size": fabric.world_size,
            "first_loss": epoch_losses[0],
            "last_loss": epoch_losses[-1],
            "replica_spread": spread,
        }
        with open(output, "w") as file:
            json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1])
