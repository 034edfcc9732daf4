"""FSDP (fabric-fsdp) against DDP (fabric-ddp) on the same model, 2 CPU processes (gloo).

Usage: python benchmarks/fsdp_vs_ddp.py [--width 1024] [--layers 4] [--batch 32] [--steps 30]
       [--warmup 5] [--json PATH]

Both strategies train the same MLP (``layers`` residual blocks of ``width x width``, Adam)
on the same batch, one torch thread per process. Reported per strategy:

- **memory**: bytes of parameters + gradients + Adam state held by each process after a
  step, counted from the tensors themselves (a DTensor counts its local shard only), and
  its ratio to DDP's. DDP's gradient buckets, FSDP's transient all-gather buffers and the
  activations are not counted;
- **step time**: median (and quartiles) over ``steps`` training steps after ``warmup``,
  of the slowest process's time for forward, backward and optimizer step. The variants
  take their steps in turns (rotating the order), so drift of a shared machine affects
  them alike.

FSDP runs FULL_SHARD and SHARD_GRAD_OP, with one ``fully_shard`` unit per block. Results
depend on the machine: on a CPU, gloo's collectives run on the same cores as the compute,
so FSDP's extra all-gathers cost wall time that GPUs would overlap with compute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_script_json
from torch import nn
from torch.distributed.tensor import DTensor

from fabric_core import Fabric
from fabric_fsdp import FSDPStrategy


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.nn.functional.gelu(self.linear(x))


def build(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(Block(width) for _ in range(layers)), nn.Linear(width, 1))


def held_bytes(module: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tensors: list[Any] = list(module.parameters())
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    tensors += [value for state in optimizer.state.values() for value in state.values()]
    total = 0
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            tensor = tensor.to_local()
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel() * tensor.element_size()
    return total


class Variant:
    """One strategy with its own copy of the model, optimizer and batch."""

    def __init__(self, name: str, strategy: Any, args: argparse.Namespace) -> None:
        self.name = name
        self.fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
        self.fabric.launch()
        model = build(args.width, args.layers)
        self.model, self.optimizer = self.fabric.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
        generator = torch.Generator().manual_seed(self.fabric.global_rank)
        self.x = torch.randn(args.batch, args.width, generator=generator)
        self.times: list[float] = []
        self.memory = 0

    def step(self, record: bool) -> None:
        self.fabric.barrier()
        started = time.perf_counter()
        self.fabric.backward(self.model(self.x).pow(2).mean())
        self.optimizer.step()
        elapsed = time.perf_counter() - started
        self.memory = held_bytes(self.model, self.optimizer)
        self.optimizer.zero_grad()
        slowest = self.fabric.all_reduce(torch.tensor(elapsed, dtype=torch.float64), reduce_op="max")
        if record:
            self.times.append(float(slowest))

    def result(self) -> dict[str, Any]:
        quartiles = statistics.quantiles(self.times, n=4)
        return {
            "strategy": self.name,
            "bytes_per_rank": self.fabric.all_gather(torch.tensor(self.memory)).tolist(),
            "step_ms": {
                "median": 1e3 * statistics.median(self.times),
                "q25": 1e3 * quartiles[0],
                "q75": 1e3 * quartiles[2],
            },
        }


def worker(fabric: Fabric, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Steps of the variants alternate (in rotating order), so a slow spell of the machine hits all alike."""
    torch.set_num_threads(1)
    variants = [
        Variant("ddp", "ddp", args),
        Variant("fsdp FULL_SHARD", FSDPStrategy(auto_wrap_policy={Block}), args),
        Variant(
            "fsdp SHARD_GRAD_OP",
            FSDPStrategy(auto_wrap_policy={Block}, sharding_strategy="SHARD_GRAD_OP"),
            args,
        ),
    ]
    for round_ in range(args.warmup + args.steps):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            variant.step(record=round_ >= args.warmup)
    return [variant.result() for variant in variants]


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    ddp = results[0]
    params = sum(p.numel() for p in build(args.width, args.layers).parameters())
    lines = [
        f"model: {args.layers} x Linear({args.width}, {args.width}) + head = {params / 1e6:.2f} M parameters, "
        f"batch {args.batch} per process, Adam, 2 processes x 1 thread, gloo, torch {torch.__version__}",
        f"{'strategy':<20} {'bytes/rank (max)':>17} {'vs DDP':>7} {'step ms (median [q25, q75])':>30} {'vs DDP':>7}",
    ]
    for result in results:
        memory = max(result["bytes_per_rank"])
        step = result["step_ms"]
        ratio_memory = memory / max(ddp["bytes_per_rank"])
        ratio_time = step["median"] / ddp["step_ms"]["median"]
        spread = f"{step['median']:.1f} [{step['q25']:.1f}, {step['q75']:.1f}]"
        lines.append(
            f"{result['strategy']:<20} {memory:>17,} {ratio_memory:>7.3f} {spread:>30} {ratio_time:>7.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    launcher = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(start_method="fork"))
    results = launcher.launch(worker, args)
    assert results is not None
    print("\n".join(report(results, args)))
    if args.json:
        write_script_json(args.json, args, results)


if __name__ == "__main__":
    main()
