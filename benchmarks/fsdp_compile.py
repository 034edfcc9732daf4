"""fabric FSDP (+ per-block compile) against a hand-written ``fully_shard`` loop on the same model.

Usage: python benchmarks/fsdp_compile.py [--width 512] [--layers 4] [--batch 32] [--steps 30]
       [--warmup 5] [--backend inductor] [--checkpoint] [--accelerator cpu|cuda] [--devices N]
       [--bf16] [--json PATH]

Four variants train the same model (``layers`` pre-norm MLP blocks ``width -> 4 width ->
width``, SGD) on the same batch:

- **hand eager**: ``fully_shard`` on each block, then on the root, and a plain loop
  (``loss.backward(); optimizer.step(); optimizer.zero_grad()``);
- **fabric eager**: ``FSDPStrategy(auto_wrap_policy={Block})`` and ``fabric.backward``;
- **hand compiled**: per block, (``--checkpoint``: activation checkpointing, then)
  ``block.compile(backend=...)``, then ``fully_shard``, and the plain loop;
- **fabric compiled**: ``FSDPStrategy(auto_wrap_policy={Block}, compile_blocks={...},
  activation_checkpointing=--checkpoint)``.

Steps of the variants alternate in rotating order, so drift of a shared machine hits all
alike; the first ``warmup`` rounds (compilation) are not timed. Reported: the median step
time of the slowest process (quartiles beside it), the ratio fabric / hand for each pair
(target: at most 1.01), and the largest difference of the losses of the pair (the same
work). On CUDA, also the MFU: model FLOPs per step (``FlopCounterMode`` over one forward
and backward of the plain model, recomputation not counted) over step time and the
device's peak (``fabric_core.utilities.throughput.get_available_flops``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_script_json
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from fabric_core import Fabric
from fabric_core.utilities.throughput import get_available_flops, measure_flops
from fabric_fsdp import FSDPStrategy, prepare_blocks


class Block(nn.Module):
    """Pre-norm MLP block with a residual: the unit that is checkpointed, compiled and sharded."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def build(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(Block(width) for _ in range(layers)), nn.Linear(width, 1))


class Variant:
    """One way of training, with its own copy of the model and optimizer."""

    def __init__(self, name: str, step: Callable[[], torch.Tensor], fabric: Fabric) -> None:
        self.name = name
        self._step = step
        self._fabric = fabric
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self, record: bool) -> None:
        cuda = self._fabric.device.type == "cuda"
        self._fabric.barrier()
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = self._step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        slowest = self._fabric.all_reduce(torch.tensor(elapsed, dtype=torch.float64), reduce_op="max")
        self.losses.append(float(loss.detach()))
        if record:
            self.times.append(float(slowest))

    def result(self) -> dict[str, Any]:
        quartiles = statistics.quantiles(self.times, n=4)
        return {
            "variant": self.name,
            "step_ms": {
                "median": 1e3 * statistics.median(self.times),
                "q25": 1e3 * quartiles[0],
                "q75": 1e3 * quartiles[2],
            },
            "losses": self.losses,
        }


def fabric_variant(name: str, args: argparse.Namespace, x: torch.Tensor, compiled: bool) -> Variant:
    options: dict[str, Any] = {"auto_wrap_policy": {Block}}
    if compiled:
        options |= {"compile_blocks": {"backend": args.backend}, "activation_checkpointing": args.checkpoint}
    precision = "bf16-mixed" if args.bf16 else "32-true"
    fabric = Fabric(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=FSDPStrategy(**options),
        precision=precision,
    )
    fabric.launch()
    model = build(args.width, args.layers)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1e-3))

    def step() -> torch.Tensor:
        loss = model(x).float().pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return Variant(name, step, fabric)


def hand_variant(
    name: str, args: argparse.Namespace, x: torch.Tensor, compiled: bool, fabric: Fabric
) -> Variant:
    model = build(args.width, args.layers).to(fabric.device)
    mesh = init_device_mesh(fabric.device.type, (fabric.world_size,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if args.bf16
        else MixedPrecisionPolicy()
    )
    blocks = [m for m in model if isinstance(m, Block)]
    if compiled:
        prepare_blocks(model, blocks, checkpoint=args.checkpoint, compile={"backend": args.backend})
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> torch.Tensor:
        loss = model(x).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return Variant(name, step, fabric)


def worker(launcher: Fabric, args: argparse.Namespace) -> dict[str, Any]:
    if launcher.device.type == "cpu":
        torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(launcher.global_rank)
    x = torch.randn(args.batch, args.width, generator=generator).to(launcher.device)
    variants = [
        hand_variant("hand eager", args, x, False, launcher),
        fabric_variant("fabric eager", args, x, False),
        hand_variant("hand compiled", args, x, True, launcher),
        fabric_variant("fabric compiled", args, x, True),
    ]
    for round_ in range(args.warmup + args.steps):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            variant.step(record=round_ >= args.warmup)
    return {"variants": [v.result() for v in variants], "mfu": mfu_inputs(launcher, args)}


def mfu_inputs(fabric: Fabric, args: argparse.Namespace) -> dict[str, Any] | None:
    """FLOPs of one step of the whole batch (all processes) and the peak of the device, on CUDA only."""
    if fabric.device.type != "cuda":
        return None
    with torch.device("meta"):
        model = build(args.width, args.layers)
        batch = torch.randn(args.batch * fabric.world_size, args.width)
    flops = measure_flops(model, lambda: model(batch), lambda y: y.float().pow(2).mean())
    peak = get_available_flops(fabric.device, torch.bfloat16 if args.bf16 else torch.float32)
    return {"flops_per_step": flops, "peak_per_device": peak, "devices": fabric.world_size}


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    variants = {v["variant"]: v for v in result["variants"]}
    mfu = result["mfu"]
    lines = [
        f"model: {args.layers} x Block({args.width} -> {4 * args.width} -> {args.width}) + head, batch {args.batch} "
        f"per process, {args.devices} x {args.accelerator}, backend {args.backend}, checkpoint={args.checkpoint}, "
        f"{'bf16-mixed' if args.bf16 else 'fp32'}, torch {torch.__version__}",
        f"{'variant':<17} {'step ms (median [q25, q75])':>30} {'fabric/hand':>12} {'max |loss diff|':>16}"
        + (f" {'MFU':>7}" if mfu else ""),
    ]
    for kind in ("eager", "compiled"):
        hand, ours = variants[f"hand {kind}"], variants[f"fabric {kind}"]
        diff = max(abs(a - b) for a, b in zip(hand["losses"], ours["losses"], strict=True))
        for variant in (hand, ours):
            step = variant["step_ms"]
            ratio = f"{step['median'] / hand['step_ms']['median']:.3f}" if variant is ours else ""
            line = f"{variant['variant']:<17} {step['median']:>10.2f} [{step['q25']:.2f}, {step['q75']:.2f}]".ljust(
                48
            )
            line += f" {ratio:>12} {f'{diff:.1e}' if variant is ours else '':>16}"
            if mfu and mfu["peak_per_device"]:
                achieved = mfu["flops_per_step"] / (step["median"] / 1e3) / mfu["devices"]
                line += f" {achieved / mfu['peak_per_device']:>7.1%}"
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation)"
    )
    parser.add_argument("--checkpoint", action="store_true", help="activation checkpointing before compile")
    parser.add_argument("--accelerator", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--devices", type=int, default=None, help="processes (default: 2 on CPU, every GPU)")
    parser.add_argument("--bf16", action="store_true", help="bf16-mixed (FSDP2 param_dtype bfloat16)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.devices is None:
        args.devices = torch.cuda.device_count() if args.accelerator == "cuda" else 2
    # Forked workers on a CPU (cheaper than new interpreters); CUDA cannot be forked, so re-run the script there.
    start_method = "fork" if args.accelerator == "cpu" else "popen"
    launcher = Fabric(
        accelerator=args.accelerator, devices=args.devices, strategy=FSDPStrategy(start_method=start_method)
    )
    result = launcher.launch(worker, args)
    assert result is not None
    print("\n".join(report(result, args)))
    if args.json:
        write_script_json(args.json, args, result)


if __name__ == "__main__":
    main()
