"""Context parallelism on 2 CUDA devices: each process holds half of every sequence.

Usage: python cp_train.py OUT_DIR

Rank 0 writes OUT_DIR/losses.json: the per-step losses (averaged over the processes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from fabric_core import Fabric
from fabric_fsdp import ModelParallelStrategy

BATCH, SEQUENCE, WIDTH, HEADS, STEPS = 2, 64, 32, 4, 4


class Attention(nn.Module):
    """One causal self-attention layer on scaled_dot_product_attention (what ring attention replaces)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(x.shape))


def make() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(Attention())


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(4)
    return [
        (
            torch.randn(BATCH, SEQUENCE, WIDTH, generator=generator),
            torch.randn(BATCH, SEQUENCE, WIDTH, generator=generator),
        )
        for _ in range(STEPS)
    ]


def train(fabric: Fabric) -> list[float]:
    net = make()
    net, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    losses = []
    for x, y in batches():
        x, y = fabric.to_device((x, y))
        loss = fabric.forward_backward(net, x, target=y, loss_fn=nn.functional.mse_loss)
        opt.step()
        opt.zero_grad()
        losses.append(float(fabric.all_reduce(loss, reduce_op="mean")))
    return losses


def main(fabric: Fabric, out_dir: Path) -> None:
    losses = train(fabric)
    if fabric.is_global_zero:
        (out_dir / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    strategy = ModelParallelStrategy(context_parallel_size=2, data_parallel_size=1, tensor_parallel_size=1)
    Fabric(accelerator="cuda", devices=2, strategy=strategy).launch(main, Path(sys.argv[1]))
