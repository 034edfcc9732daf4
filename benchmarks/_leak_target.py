"""The long run that ``leak.py`` measures: many small steps, a checkpoint every ``--every`` steps.

Usage: python benchmarks/_leak_target.py OUT_JSON --strategy ddp --devices 2 --steps 10000 --every 500

Each rank samples its resident memory (``VmRSS``) and its open file descriptors every
``--sample`` steps; rank 0 writes every rank's samples to OUT_JSON. Checkpoints go to a
temporary directory, the last two kept (as a run that keeps recent checkpoints would).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fabric_core import Fabric


def resident_mib() -> float:
    """This process's resident memory in MiB, from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line (this benchmark needs Linux).")


def open_descriptors() -> int:
    """How many file descriptors this process holds open."""
    return len(os.listdir("/proc/self/fd"))


def train(fabric: Fabric, args: argparse.Namespace, folder: str) -> list[dict[str, float]]:
    """``args.steps`` optimizer steps with Adam, a checkpoint every ``args.every``; the samples taken."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 1))
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    generator = torch.Generator().manual_seed(fabric.global_rank)
    batches = [(torch.randn(16, 32, generator=generator), torch.randn(16, 1, generator=generator))] * 8
    samples: list[dict[str, float]] = []
    saved: list[Path] = []
    for step in range(1, args.steps + 1):
        x, y = batches[step % len(batches)]
        fabric.backward(nn.functional.mse_loss(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0:
            path = Path(folder) / f"step-{step}.ckpt"
            fabric.save(path, {"model": model, "optimizer": optimizer, "step": step})
            saved.append(path)
            if len(saved) > 2 and fabric.is_global_zero:
                fabric.strategy.checkpoint_io.remove_checkpoint(saved.pop(0))
            fabric.barrier()
        if step % args.sample == 0:
            samples.append({"step": step, "rss_mib": resident_mib(), "fds": open_descriptors()})
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_json")
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--sample", type=int, default=100)
    args = parser.parse_args()
    fabric = Fabric(accelerator="cpu", devices=args.devices, strategy=args.strategy)
    fabric.launch()
    with tempfile.TemporaryDirectory() as scratch:
        folder = fabric.broadcast(scratch)  # every rank writes into rank 0's folder
        samples = train(fabric, args, folder)
        per_rank: Any = [None] * fabric.world_size
        if fabric.world_size > 1:
            torch.distributed.all_gather_object(per_rank, samples)
        else:
            per_rank = [samples]
        fabric.barrier()
    if fabric.is_global_zero:
        Path(args.out_json).write_text(json.dumps({"strategy": args.strategy, "ranks": per_rank}))


if __name__ == "__main__":
    main()
