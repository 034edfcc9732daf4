"""A researcher's training loop, written once against the public Fabric API and run under any strategy.

Usage: python one_loop.py STRATEGY MODE OUT_DIR

The loop: gradient accumulation over ``ACCUMULATE`` micro-batches with
``fabric.no_backward_sync``, ``fabric.clip_gradients(max_norm=MAX_NORM)``, SGD with momentum,
a ``LambdaLR`` scheduler built on the optimizer that ``fabric.setup`` returned, and
``fabric.save`` / ``fabric.load`` to resume. Only the strategy name changes between runs;
the per-process batch is ``GLOBAL_BATCH // fabric.world_size``, so one process and two
processes see the same samples in every optimizer step (the loader does not shuffle).

MODE is one of:

- ``full``: train ``STEPS`` optimizer steps, ``fabric.save`` the model, optimizer,
  scheduler and step to ``OUT_DIR/checkpoint`` after step ``RESUME_AT`` (as a loop that
  checkpoints periodically does), and write ``OUT_DIR/full.json``.
- ``resume``: in new processes, build everything anew, ``fabric.load`` the checkpoint and
  train on to ``STEPS``; writes ``OUT_DIR/resume.json`` with the steps after the checkpoint.

Each JSON file, written by global rank 0, holds per optimizer step the loss (the mean of the
micro-batch losses, each all-reduced as a mean over the processes), the gradient norm that
``clip_gradients`` returned, and the learning rate the step used.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric, seed_everything

STEPS = 6
RESUME_AT = STEPS // 2
ACCUMULATE = 2
GLOBAL_BATCH = 8
"""Samples per micro-batch over all processes: 8 on one process, 4 on each of two."""
PROCESSES = 2
"""Processes for every strategy except ``single_device``."""
FEATURES = 8
HIDDEN = 16
LR = 0.05
MAX_NORM = 1.0
SEED = 1234
DATA_SEED = 42
MODES = ("full", "resume")


def dataset() -> TensorDataset:
    """A fixed regression problem: exactly the samples of ``STEPS`` steps, the same in every process."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    samples = STEPS * ACCUMULATE * GLOBAL_BATCH
    x = torch.randn(samples, FEATURES, generator=generator)
    w = torch.randn(FEATURES, 1, generator=generator)
    y = 1.5 * torch.sin(x @ w) + 0.1 * torch.randn(samples, 1, generator=generator)
    return TensorDataset(x, y)


def build_model() -> nn.Module:
    """A small MLP whose initial weights depend only on ``SEED`` (identical on every rank)."""
    seed_everything(SEED, verbose=False)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)
    )


def schedule(step: int) -> float:
    """The learning-rate factor of ``LambdaLR``: decays by 10 % per optimizer step."""
    return 0.9**step


def train(fabric: Fabric, mode: str, out_dir: Path) -> dict[str, Any]:
    """Build the model, optimizer, scheduler and data anew, and run the loop ``mode`` asks for."""
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loader = fabric.setup_dataloaders(
        DataLoader(dataset(), batch_size=GLOBAL_BATCH // fabric.world_size, shuffle=False)
    )
    checkpoint = out_dir / "checkpoint"

    step = 0
    if mode == "resume":
        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 0}
        remainder = fabric.load(checkpoint, state)
        assert remainder == {}, f"fabric.load returned entries that state did not name: {remainder}"
        step = state["step"]
        assert step == RESUME_AT, f"the checkpoint's step is {step}, expected {RESUME_AT}"

    record: dict[str, Any] = {"world_size": fabric.world_size, "losses": [], "norms": [], "lrs": []}
    batches = iter(loader)
    # skip the micro-batches of the steps trained before the checkpoint
    for _ in itertools.islice(batches, step * ACCUMULATE):
        pass
    while step < STEPS:
        record["lrs"].append(optimizer.param_groups[0]["lr"])
        step_loss = 0.0
        for micro in range(ACCUMULATE):
            x, y = next(batches)
            last = micro == ACCUMULATE - 1
            with fabric.no_backward_sync(model, enabled=not last):
                loss = nn.functional.mse_loss(model(x), y)
                fabric.backward(loss / ACCUMULATE)
            step_loss += fabric.all_reduce(loss.detach(), reduce_op="mean").item() / ACCUMULATE
        norm = fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        step += 1
        record["losses"].append(step_loss)
        record["norms"].append(None if norm is None else float(norm))
        if mode == "full" and step == RESUME_AT:
            fabric.save(
                checkpoint, {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": step}
            )
    return record


def main(strategy: str, mode: str, out_dir: Path) -> None:
    """Launch the processes for ``strategy``, run the loop, and write rank 0's record as JSON."""
    if mode not in MODES:
        raise SystemExit(f"MODE must be one of {MODES}, got {mode!r}")
    devices = 1 if strategy == "single_device" else PROCESSES
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=devices)
    fabric.launch()
    record = train(fabric, mode, out_dir)
    if fabric.is_global_zero:
        (out_dir / f"{mode}.json").write_text(json.dumps(record, indent=1))
    fabric.barrier()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
