"""One researcher's loop, unchanged, under several sharded strategies at 2 processes (one launch).

Usage: python one_loop.py OUT_DIR

The loop: gradient accumulation over ACCUMULATE micro-batches with
``fabric.no_backward_sync(model, enabled=...)``, ``fabric.clip_gradients(max_norm=...)``, a
``LambdaLR`` built on the optimizer ``fabric.setup`` returned, and ``fabric.save`` at the
middle step. Each configuration runs it uninterrupted, then once more from a fresh model
that resumes from the middle checkpoint with ``fabric.load``. Rank 0 writes
OUT_DIR/results.json: per configuration the all-reduced mean loss and the clipping norm of
every step, for both runs, and observations (recomputed blocks, checkpoint keys, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import Block, write_json

from fabric_core import Fabric
from fabric_fsdp import FSDPStrategy

STEPS = 4
RESUME_AT = 2
ACCUMULATE = 2
MICRO_BATCH = 4  # per process; the global micro-batch is WORLD_SIZE times larger
WORLD_SIZE = 2
LR = 0.02
MAX_NORM = 0.1


class CountingBlock(Block):
    """A Block that counts how often its forward runs (activation checkpointing runs it again in backward)."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


class Net(nn.Sequential):
    """Width 15: rows shard unevenly (8 + 7) over two processes."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(8, 15), CountingBlock(15), CountingBlock(15), nn.Linear(15, 1))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self.calls += 1
        return super().forward(x)


def make_model(seed: int = 1) -> Net:
    torch.manual_seed(seed)
    return Net()


def make_optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=LR)


def make_scheduler(optimizer: torch.optim.Optimizer) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0 / (1.0 + step))


def global_batch(step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The micro-batch ``micro`` of step ``step`` for all processes together."""
    generator = torch.Generator().manual_seed(1000 * step + micro)
    size = WORLD_SIZE * MICRO_BATCH
    return torch.randn(size, 8, generator=generator), torch.randn(size, 1, generator=generator)


def reference() -> dict[str, list[float]]:
    """The same loop in one plain PyTorch process, on the global micro-batches."""
    net = make_model()
    opt = make_optimizer(net.parameters())
    scheduler = make_scheduler(opt)
    losses, norms = [], []
    for step in range(STEPS):
        micro_losses = []
        for micro in range(ACCUMULATE):
            x, y = global_batch(step, micro)
            loss = nn.functional.mse_loss(net(x), y)
            (loss / ACCUMULATE).backward()
            micro_losses.append(loss.item())
        norms.append(torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM).item())
        opt.step()
        opt.zero_grad()
        scheduler.step()
        losses.append(sum(micro_losses) / ACCUMULATE)
    return {"losses": losses, "norms": norms}


def loop(
    fabric: Fabric,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    start: int,
    checkpoint: Path | None,
) -> dict[str, list[Any]]:
    """Steps ``start`` to STEPS; saves to ``checkpoint`` after step RESUME_AT - 1 when given."""
    losses: list[float] = []
    norms: list[float] = []
    norm_types: set[str] = set()
    for step in range(start, STEPS):
        micro_losses = []
        for micro in range(ACCUMULATE):
            x, y = global_batch(step, micro)
            x, y = (
                x.chunk(fabric.world_size)[fabric.global_rank],
                y.chunk(fabric.world_size)[fabric.global_rank],
            )
            with fabric.no_backward_sync(model, enabled=micro < ACCUMULATE - 1):
                loss = nn.functional.mse_loss(model(x), y)
                fabric.backward(loss / ACCUMULATE)
            micro_losses.append(loss.detach())
        norm = fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        assert norm is not None
        norm_types.add(f"{type(norm).__name__}:{isinstance(norm, DTensor)}")
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        losses.append(fabric.all_reduce(torch.stack(micro_losses).mean(), reduce_op="mean").item())
        norms.append(norm.item())
        if checkpoint is not None and step == RESUME_AT - 1:
            state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": step + 1}
            fabric.save(checkpoint, state)
    return {"losses": losses, "norms": norms, "norm_types": sorted(norm_types)}


def run_configuration(
    make_fabric: Callable[[], Fabric], out_dir: Path, name: str, compile_model: bool = False
) -> dict[str, Any]:
    """The uninterrupted run (saving at the middle), then the run resumed from that checkpoint."""
    checkpoint = out_dir / f"{name}.ckpt"
    fabric = make_fabric()
    fabric.launch()
    net = make_model()
    plain = net
    opt = make_optimizer(net.parameters())
    model, opt = fabric.setup(torch.compile(net, backend="eager") if compile_model else net, opt)
    scheduler = make_scheduler(opt)
    uninterrupted = loop(fabric, model, opt, scheduler, 0, checkpoint)
    result: dict[str, Any] = {"uninterrupted": uninterrupted}
    result["root_calls"] = plain.calls
    result["block_calls"] = [plain[1].calls, plain[2].calls]
    result["lr_after"] = scheduler.get_last_lr()
    try:
        fabric.setup(plain)
    except ValueError as error:
        result["second_setup_error"] = str(error)
    if checkpoint.is_dir():
        result["checkpoint_keys"] = sorted(
            dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
        )

    fabric = make_fabric()
    fabric.launch()
    net = make_model(seed=2)  # other initial values: only loading can make the runs agree
    opt = make_optimizer(net.parameters())
    model, opt = fabric.setup(torch.compile(net, backend="eager") if compile_model else net, opt)
    scheduler = make_scheduler(opt)
    state: dict[str, Any] = {"model": model, "optimizer": opt, "scheduler": scheduler, "step": 0}
    fabric.load(checkpoint, state)
    result["resumed_step"] = state["step"]
    result["resumed"] = loop(fabric, model, opt, scheduler, state["step"], None)
    result["resumed_lr_after"] = scheduler.get_last_lr()
    return result


CONFIGURATIONS: dict[str, tuple[Callable[[], Any], bool]] = {
    "fsdp": (lambda: "fsdp", False),
    "fsdp_wrap_checkpointing": (
        lambda: FSDPStrategy(auto_wrap_policy={CountingBlock}, activation_checkpointing=True),
        False,
    ),
    "model_parallel": (lambda: "model_parallel", False),
    "fsdp_compiled": (lambda: FSDPStrategy(auto_wrap_policy={CountingBlock}), True),
}


def main(launcher: Fabric, out_dir: Path) -> None:
    results = {}
    for name, (strategy, compile_model) in CONFIGURATIONS.items():

        def make_fabric(strategy: Callable[[], Any] = strategy) -> Fabric:
            return Fabric(accelerator="cpu", devices=WORLD_SIZE, strategy=strategy())

        results[name] = run_configuration(make_fabric, out_dir, name, compile_model)
    if launcher.is_global_zero:
        write_json(out_dir / "results.json", results)


if __name__ == "__main__":
    Fabric(accelerator="cpu", devices=WORLD_SIZE, strategy=FSDPStrategy(start_method="fork")).launch(
        main, Path(sys.argv[1])
    )
