"""The model, data and loop shared by the DeepSpeed test scripts and the single-process reference."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# Each package's tests run with only that package installed, so this toy model, data and one-process
# reference repeat those of the other plugin packages' test scripts by design (no shared test package).
SAMPLES = 64
PER_RANK_BATCH = 4
WORLD_SIZE = 2
EPOCHS = 2
LR = 0.01


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(SAMPLES, 8, generator=generator), torch.randn(SAMPLES, 1, generator=generator)
    )


def model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=LR)


def reference_parameters() -> dict[str, torch.Tensor]:
    """One process, batch WORLD_SIZE * PER_RANK_BATCH, plain PyTorch, no clipping."""
    net = model()
    opt = optimizer(net.parameters())
    loader = DataLoader(dataset(), batch_size=WORLD_SIZE * PER_RANK_BATCH)
    for _ in range(EPOCHS):
        for x, y in loader:
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole float32 state dict of a set-up model, gathering ZeRO-3 partitions (all ranks must call)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


def no_ops_compiled() -> None:
    """The tests must not compile DeepSpeed's C++ ops (minutes each on a CPU)."""
    from deepspeed.ops.op_builder.builder import OpBuilder

    loaded = list(OpBuilder._loaded_ops)
    assert not loaded, f"DeepSpeed loaded compiled ops {loaded}; CI keeps them out to stay fast"
