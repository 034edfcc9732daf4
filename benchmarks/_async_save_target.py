"""The loop that ``async_save.py`` measures: fsdp steps with a sharded checkpoint every ``--every`` steps.

Usage: python benchmarks/_async_save_target.py OUT_JSON --async-save --steps 40 --every 10

Each rank times every step, with the ``fabric.save`` that ends it when one does; rank 0
writes the times to OUT_JSON. The checkpoint directory is a temporary one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from fabric_core import Fabric
from fabric_fsdp import FSDPStrategy


def train(fabric: Fabric, args: argparse.Namespace, folder: str) -> dict[str, list[float]]:
    """Adam steps on a wide MLP; the seconds of plain steps and of steps that end with a save."""
    torch.manual_seed(0)
    width = args.width
    model = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(4)])
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
    x = torch.randn(8, width, generator=torch.Generator().manual_seed(fabric.global_rank))
    times: dict[str, list[float]] = {"step": [], "step_with_save": [], "save_call": []}
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        fabric.backward(model(x).square().mean())
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0:
            before = time.perf_counter()
            fabric.save(
                Path(folder) / f"step-{step % (2 * args.every)}", {"model": model, "optimizer": optimizer}
            )
            times["save_call"].append(time.perf_counter() - before)
            times["step_with_save"].append(time.perf_counter() - start)
        else:
            times["step"].append(time.perf_counter() - start)
    start = time.perf_counter()
    fabric.strategy.wait_for_checkpoint()  # type: ignore[attr-defined]
    times["final_wait"] = [time.perf_counter() - start]
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_json")
    parser.add_argument("--async-save", action="store_true")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    strategy = FSDPStrategy(async_save=args.async_save)
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    fabric.launch()
    with tempfile.TemporaryDirectory() as scratch:
        folder = fabric.broadcast(scratch)  # every rank writes into rank 0's folder
        start = time.perf_counter()
        times = train(fabric, args, folder)
        times["total"] = [time.perf_counter() - start]
    if fabric.is_global_zero:
        Path(args.out_json).write_text(json.dumps(times))


if __name__ == "__main__":
    main()
