"""The seed's usage snippets at their CPU equivalent (2 processes, gloo), each training two steps.

Usage: ``python seed_snippets.py SNIPPET OUT_DIR``. The script calls ``fabric.launch()`` itself
and rank 0 writes ``OUT_DIR/SNIPPET.json`` with what the test checks.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fabric_core import Fabric, seed_everything


class Block(nn.Module):
    """A transformer-like block: what a transformer wrap policy selects."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


def model() -> nn.Module:
    """Two blocks and a head, the same on every rank."""
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block(), nn.Linear(8, 1))


def deepspeed_with_a_config_dict() -> Fabric:
    """The seed's DeepSpeed config dict (ZeRO-3, optimizer and parameters offloaded to the CPU)."""
    from fabric_deepspeed import DeepSpeedStrategy

    deepspeed_config = {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": False},
            "offload_param": {"device": "cpu", "pin_memory": False},
        },
        "train_micro_batch_size_per_gpu": 1,
    }
    return Fabric(accelerator="cpu", strategy=DeepSpeedStrategy(config=deepspeed_config), devices=2)


def fsdp_with_custom_configuration() -> Fabric:
    """The seed's custom FSDPStrategy, with the wrap policy given its layer class (the fix its error names)."""
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from fabric_fsdp import FSDPStrategy

    strategy = FSDPStrategy(
        cpu_offload=True,
        mixed_precision=MixedPrecision(
            param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, buffer_dtype=torch.bfloat16
        ),
        auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block}),
        activation_checkpointing=True,
    )
    return Fabric(accelerator="cpu", strategy=strategy, devices=2)


SNIPPETS = {
    "deepspeed_with_a_config_dict": deepspeed_with_a_config_dict,
    "fsdp_with_custom_configuration": fsdp_with_custom_configuration,
}


def main(name: str, out_dir: Path) -> None:
    """Build the snippet's Fabric, train two steps, and record the losses and the strategy."""
    fabric = SNIPPETS[name]()
    fabric.launch()
    seed_everything(0, verbose=False)
    module = model()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module, optimizer = fabric.setup(module, optimizer)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(fabric.global_rank))
    losses = []
    for _ in range(2):
        loss = module(x).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(fabric.all_reduce(loss.detach().float(), reduce_op="mean").item())
    record: dict[str, Any] = {
        "strategy": type(fabric.strategy).__name__,
        "world_size": fabric.world_size,
        "losses": losses,
    }
    if name == "deepspeed_with_a_config_dict":
        record["stage"] = fabric.strategy.config["zero_optimization"]["stage"]
    if fabric.is_global_zero:
        (out_dir / f"{name}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
