"""A small model, fixed batches and the plain-PyTorch reference loop the XLA runs are compared with."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fabric_core.testing.processes import run_process
from fabric_xla.accelerator import tpu_chip_count

SCRIPTS = Path(__file__).parent / "scripts"
STEPS = 4
BATCH = 8


def has_tpu() -> bool:
    return tpu_chip_count() > 0


needs_tpu = pytest.mark.skipif(
    not has_tpu(), reason="needs a TPU: multi-process XLA collectives hang on XLA:CPU (upstream)"
)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def make_batches(steps: int = STEPS, size: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 4, generator=generator), torch.randn(size, 3, generator=generator))
        for _ in range(steps)
    ]


def make_optimizer(model: nn.Module, kind: str = "sgd") -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.05)
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs), targets)


def reference_run(
    kind: str = "sgd", steps: int = STEPS, size: int = BATCH
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Parameters and losses of plain PyTorch on the CPU."""
    model = make_model()
    optimizer = make_optimizer(model, kind)
    losses = []
    for batch in make_batches(steps, size):
        loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return cpu_state(model), losses


def train(fabric: Any, model: Any, optimizer: Any, steps: int = STEPS) -> list[float]:
    """The user's loop: no XLA-specific call in it."""
    losses = []
    for batch in make_batches(steps):
        loss = loss_of(model, fabric.to_device(batch))
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def assert_close_states(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-5
) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key].float(), value.float(), rtol=1e-4, atol=atol, msg=key)


def run_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 200) -> Any:
    """Run ``scripts/<name>`` in a fresh interpreter and return the JSON it prints last."""
    result = run_process(
        [sys.executable, str(SCRIPTS / name), *args],
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})},
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
