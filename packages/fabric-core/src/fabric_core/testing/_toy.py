"""The toy problem the training checks share: a small MLP, regression data, a plain reference loop."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = [
    "EVAL_SAMPLES",
    "LEARNING_RATE",
    "MOMENTUM",
    "PER_RANK_BATCH",
    "eval_batch",
    "make_model",
    "make_optimizer",
    "micro_batch",
    "reference_training",
    "regression_data",
    "reference_dtype",
]

IN_FEATURES = 6
HIDDEN = 12
PER_RANK_BATCH = 4
EVAL_SAMPLES = 16
LEARNING_RATE = 0.1
MOMENTUM = 0.9


def make_model(seed: int) -> nn.Module:
    """The same small MLP on every rank for the same seed."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def make_optimizer(parameters: Any) -> torch.optim.Optimizer:
    """SGD with momentum: it has per-parameter state, so checkpoints must carry optimizer state."""
    return torch.optim.SGD(parameters, lr=LEARNING_RATE, momentum=MOMENTUM)


def regression_data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` inputs and targets of a smooth function, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, IN_FEATURES, generator=generator)
    y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(samples, 1, generator=generator)
    return x, y


def eval_batch(seed: int) -> torch.Tensor:
    """Inputs on which models are compared through their outputs."""
    return regression_data(EVAL_SAMPLES, seed + 1000)[0]


def micro_batch(seed: int, rank: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch that differs between ranks and between indices."""
    return regression_data(PER_RANK_BATCH, seed + 100 * (rank + 1) + index)


def reference_dtype(precision: str) -> torch.dtype:
    """The dtype of the single-process reference: float64 for ``"64-true"``, else float32."""
    return torch.float64 if precision.startswith("64") else torch.float32


def reference_training(
    model: nn.Module,
    steps: list[list[tuple[torch.Tensor, torch.Tensor]]],
    dtype: torch.dtype,
    probes: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train a copy of ``model`` in one process and return it with the losses of ``probes``.

    Step ``s`` adds up the gradients of the micro-batches ``steps[s]`` (each a global
    micro-batch: every rank's part together), then the optimizer steps once. ``probes[s][m]``
    (one rank's part of ``steps[s][m]``) is evaluated without gradients just before that
    micro-batch's backward pass: the loss that rank should see.
    """
    reference = copy.deepcopy(model).to("cpu", dtype)
    optimizer = make_optimizer(reference.parameters())
    losses: list[float] = []
    for index, micro_batches in enumerate(steps):
        for micro, (xb, yb) in enumerate(micro_batches):
            if probes is not None:
                px, py = probes[index][micro]
                with torch.no_grad():
                    losses.append(nn.functional.mse_loss(reference(px.to(dtype)), py.to(dtype)).item())
            nn.functional.mse_loss(reference(xb.to(dtype)), yb.to(dtype)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return reference, losses
