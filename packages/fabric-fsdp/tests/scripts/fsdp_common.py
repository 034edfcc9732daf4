"""The models, data and reference loops shared by the FSDP test scripts and the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, TensorDataset

from fabric_core.testing.processes import run_process

# Each package's tests run with only that package installed, so this toy model, data and one-process
# reference repeat those of the other plugin packages' test scripts by design (no shared test package).
SAMPLES = 64
PER_RANK_BATCH = 4
WORLD_SIZE = 2
EPOCHS = 2
LR = 0.01
MAX_NORM = 0.05


class Block(nn.Module):
    """A residual layer: the unit the wrap policies select."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


def model() -> nn.Module:
    """Width 15 on purpose: 15 rows shard unevenly (8 + 7) over two processes."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 15), Block(15), Block(15), nn.Linear(15, 1))


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(SAMPLES, 8, generator=generator), torch.randn(SAMPLES, 1, generator=generator)
    )


def optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=LR)


def reference_parameters(clip: bool = False) -> dict[str, torch.Tensor]:
    """One process, batch WORLD_SIZE * PER_RANK_BATCH, plain PyTorch."""
    net = model()
    opt = optimizer(net.parameters())
    loader = DataLoader(dataset(), batch_size=WORLD_SIZE * PER_RANK_BATCH)
    for _ in range(EPOCHS):
        for x, y in loader:
            nn.functional.mse_loss(net(x), y).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
            opt.step()
            opt.zero_grad()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every entry of a (possibly sharded) module's state dict as a full plain tensor."""
    return {
        key: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
        for key, value in module.state_dict().items()
    }


def local_bytes(tensors: Any) -> int:
    """Bytes this process holds for the given tensors (a DTensor counts its local shard only)."""
    total = 0
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            tensor = tensor.to_local()
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel() * tensor.element_size()
    return total


def training_bytes(module: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Parameters + gradients + optimizer state held by this process."""
    params = list(module.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    states = [value for state in opt.state.values() for value in state.values()]
    return local_bytes(params) + local_bytes(grads) + local_bytes(states)


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a script of this folder with this interpreter; fail with its output if it fails."""
    result = run_process([sys.executable, *args], timeout=timeout)
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1))
