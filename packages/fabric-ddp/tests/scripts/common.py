"""The model, data and loop shared by the DDP test scripts and the single-process reference."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# Each package's tests run with only that package installed, so this toy model, data and one-process
# reference repeat those of the other plugin packages' test scripts by design (no shared test package).
SAMPLES = 64
PER_RANK_BATCH = 4
WORLD_SIZE = 2
EPOCHS = 2
LR = 0.1


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(SAMPLES, 8, generator=generator), torch.randn(SAMPLES, 1, generator=generator)
    )


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def reference_parameters() -> dict[str, torch.Tensor]:
    """One process, batch WORLD_SIZE * PER_RANK_BATCH, plain PyTorch."""
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    loader = DataLoader(dataset(), batch_size=WORLD_SIZE * PER_RANK_BATCH)
    for _ in range(EPOCHS):
        for x, y in loader:
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def train(fabric, accumulate: bool = False) -> nn.Module:  # type: ignore[no-untyped-def]
    """The data-parallel loop: each rank gets PER_RANK_BATCH samples per step."""
    net = model()
    net, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=LR))
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=PER_RANK_BATCH))
    for _ in range(EPOCHS):
        for x, y in loader:
            if accumulate:
                halves = list(zip(x.chunk(2), y.chunk(2)))
                with fabric.no_backward_sync(net):
                    fabric.backward(nn.functional.mse_loss(net(halves[0][0]), halves[0][1]) / 2)
                fabric.backward(nn.functional.mse_loss(net(halves[1][0]), halves[1][1]) / 2)
            else:
                fabric.backward(nn.functional.mse_loss(net(x), y))
            optimizer.step()
            optimizer.zero_grad()
    return net
