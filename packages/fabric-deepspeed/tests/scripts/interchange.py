"""Checkpoints that travel into and out of DeepSpeed, in one 2-process CPU launch.

Usage: python interchange.py OUT_DIR

``OUT_DIR`` holds what the test wrote in its own process: the uninterrupted single-device
run's losses (``reference.pt``), its checkpoint after ``SAVED`` steps as a single file
(``single.pt``, index-keyed optimizer state) and as a DCP directory with a name-keyed
optimizer state (``dcp``, as FSDP's sharded checkpoints hold it).

For ZeRO stages 2 and 3 this trains ``SAVED`` steps (the losses of the uninterrupted run)
and saves ``OUT_DIR/ds<stage>``; then fresh engines, built from other weights, load
``single.pt`` (and, under stage 3, ``dcp`` and the stage-2 directory ``ds2``) and must
continue with the uninterrupted run's next ``NEXT`` losses: weights, Adam's moments, the
step, the learning rate and the scheduler all carried over. Last, a bf16 ZeRO-3 engine
loads ``single.pt`` and must hold its float32 values exactly in its master weights and
moments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import PER_RANK_BATCH, dataset, model, no_ops_compiled

from fabric_core import Fabric

SAVED = 3
NEXT = 3
TOLERANCE = 1e-5


def make_optimizer(parameters: Any) -> torch.optim.Optimizer:
    """AdamW with weight decay: moments, a step count and hyperparameters to carry over."""
    return torch.optim.AdamW(parameters, lr=0.01, weight_decay=0.1)


def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Halves the learning rate every 2 steps, so the continued steps cross a change."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def step(fabric: Fabric, net: Any, opt: Any, scheduler: Any, batch: Any) -> float:
    """One training step; the loss of the whole (all ranks') batch."""
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    fabric.backward(loss, model=net)
    opt.step()
    opt.zero_grad()
    scheduler.step()
    return float(fabric.all_reduce(loss.detach(), reduce_op="mean"))


def check(losses: list[float], expected: list[float], what: str) -> None:
    worst = max(abs(a - b) for a, b in zip(losses, expected, strict=True))
    assert worst <= TOLERANCE, f"{what}: losses {losses}, uninterrupted run {expected} (off by {worst:.2e})"


def continue_from(fabric: Fabric, path: Path, data: list[Any], expected: list[float], what: str) -> None:
    """A fresh engine loads ``path`` and must continue with the uninterrupted run's losses."""
    net, opt = _fresh(fabric)
    scheduler = make_scheduler(opt)
    state = {"model": net, "optimizer": opt, "scheduler": scheduler, "step": 0}
    remainder = fabric.load(path, state)
    assert state["step"] == SAVED and not remainder, (what, state["step"], remainder)
    losses = [step(fabric, net, opt, scheduler, batch) for batch in data[SAVED : SAVED + NEXT]]
    check(losses, expected[SAVED:], what)


def _fresh(fabric: Fabric) -> tuple[Any, Any]:
    net = model(seed=7)
    return fabric.setup(net, make_optimizer(net.parameters()))


def main(out: Path) -> None:
    expected = torch.load(out / "reference.pt")
    for stage in (2, 3):
        fabric = Fabric(accelerator="cpu", devices=2, strategy=f"deepspeed_stage_{stage}")
        fabric.launch()
        data = list(fabric.setup_dataloaders(DataLoader(dataset(), batch_size=PER_RANK_BATCH)))
        net = model()
        net, opt = fabric.setup(net, make_optimizer(net.parameters()))
        scheduler = make_scheduler(opt)
        losses = [step(fabric, net, opt, scheduler, batch) for batch in data[:SAVED]]
        check(losses, expected[:SAVED], f"stage {stage}, the first steps")
        fabric.save(
            out / f"ds{stage}", {"model": net, "optimizer": opt, "scheduler": scheduler, "step": SAVED}
        )
        continue_from(fabric, out / "single.pt", data, expected, f"stage {stage} from a single-device file")
        if stage == 3:
            continue_from(fabric, out / "dcp", data, expected, "stage 3 from a DCP directory")
            continue_from(fabric, out / "ds2", data, expected, "stage 3 from a stage-2 directory")
        fabric.barrier()
    bf16_keeps_the_float32_values(out)
    no_ops_compiled()


def bf16_keeps_the_float32_values(out: Path) -> None:
    """Under bf16, ZeRO 3's float32 master weights and moments get the file's values, not bf16-rounded ones."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    fabric = Fabric(accelerator="cpu", devices=2, strategy="deepspeed_stage_3", precision="bf16-mixed")
    fabric.launch()
    net, opt = _fresh(fabric)
    fabric.load(out / "single.pt", {"model": net, "optimizer": opt}, strict=False)
    saved = torch.load(out / "single.pt")
    for index, (name, parameter) in enumerate(net.module.named_parameters()):
        assert parameter.dtype == torch.bfloat16, parameter.dtype
        assert torch.equal(safe_get_full_fp32_param(parameter), saved["model"][name]), name
        moment = safe_get_full_optimizer_state(parameter, "exp_avg_sq")
        assert torch.equal(moment, saved["optimizer"]["state"][index]["exp_avg_sq"]), name


if __name__ == "__main__":
    main(Path(sys.argv[1]))
