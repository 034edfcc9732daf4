"""Save a DeepSpeed checkpoint mid-training, then resume it in fresh processes (2 CPU processes).

Usage: python checkpoint.py OUT_DIR save|resume

``save`` trains 3 steps under ZeRO 2 and ZeRO 3, saves ``OUT_DIR/ds<stage>`` with the
model, the Adam state and plain entries, records the full parameters at that point
(``saved<stage>.pt``), then trains step 4 and records its loss and the loss of the next
batch (per rank). ``resume`` starts from a differently initialised model, loads the
directory and must reproduce both losses exactly; under ZeRO 3 it also loads the
consolidated single file into a fresh model and trains on from it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import PER_RANK_BATCH, dataset, full_state_dict, model, no_ops_compiled, optimizer

from fabric_core import Fabric
from fabric_deepspeed import consolidate_checkpoint

STAGES = (2, 3)
SAVED_STEP = 3
META = {"note": "kept", "lrs": [0.01]}


def batches(fabric: Fabric) -> list[Any]:
    return list(fabric.setup_dataloaders(DataLoader(dataset(), batch_size=PER_RANK_BATCH)))


def train_step(fabric: Fabric, net: Any, opt: Any, batch: Any, several_models: bool = False) -> float:
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    fabric.backward(loss, model=net if several_models else None)
    opt.step()
    opt.zero_grad()
    return loss.item()


def next_loss(net: Any, batch: Any) -> float:
    with torch.no_grad():
        return nn.functional.mse_loss(net(batch[0]), batch[1]).item()


def save(out: Path) -> None:
    for stage in STAGES:
        fabric = Fabric(accelerator="cpu", devices=2, strategy=f"deepspeed_stage_{stage}")
        fabric.launch()
        net = model()
        net, opt = fabric.setup(net, optimizer(net.parameters()))
        data = batches(fabric)
        for batch in data[:SAVED_STEP]:
            train_step(fabric, net, opt, batch)
        fabric.save(out / f"ds{stage}", {"model": net, "optimizer": opt, "step": SAVED_STEP, "meta": META})
        params = full_state_dict(net.module)
        if fabric.is_global_zero:
            torch.save(params, out / f"saved{stage}.pt")
        expected = {
            "step4": train_step(fabric, net, opt, data[SAVED_STEP]),
            "next": next_loss(net, data[SAVED_STEP + 1]),
        }
        torch.save(expected, out / f"expected{stage}_rank{fabric.global_rank}.pt")
        fabric.barrier()


def resume(out: Path) -> None:
    for stage in STAGES:
        fabric = Fabric(accelerator="cpu", devices=2, strategy=f"deepspeed_stage_{stage}")
        fabric.launch()
        net = model(seed=7)
        net, opt = fabric.setup(net, optimizer(net.parameters()))
        data = batches(fabric)
        state = {"model": net, "optimizer": opt, "step": 0}
        remainder = fabric.load(out / f"ds{stage}", state)
        assert state["step"] == SAVED_STEP and remainder == {"meta": META}, (state, remainder)
        expected = torch.load(out / f"expected{stage}_rank{fabric.global_rank}.pt")
        step4 = train_step(fabric, net, opt, data[SAVED_STEP])
        following = next_loss(net, data[SAVED_STEP + 1])
        assert (step4, following) == (expected["step4"], expected["next"]), (
            stage,
            step4,
            following,
            expected,
        )
        if stage == 3:
            continue_from_consolidated_file(fabric, out, data)
        fabric.barrier()
    no_ops_compiled()


def continue_from_consolidated_file(fabric: Fabric, out: Path, data: list[Any]) -> None:
    """A consolidated file loads into a set-up ZeRO-3 model, master weights included."""
    path = out / "consolidated3.pt"
    if fabric.is_global_zero:
        torch.save(consolidate_checkpoint(out / "ds3"), path)
    fabric.barrier()
    net = model(seed=11)
    net, opt = fabric.setup(net, optimizer(net.parameters()))
    state = {"model": net, "step": 0, "meta": {}}
    fabric.load(path, state)
    assert state["step"] == SAVED_STEP and state["meta"] == META, state
    saved = torch.load(out / "saved3.pt")
    loaded = full_state_dict(net.module)
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    expected = torch.load(out / f"expected3_rank{fabric.global_rank}.pt")
    assert train_step(fabric, net, opt, data[SAVED_STEP], several_models=True) == expected["step4"]
    # A fresh Adam moves each weight by at most about lr: the step started from the loaded
    # weights, so the optimizer's master copy was refreshed too.
    after = full_state_dict(net.module)
    for name, tensor in saved.items():
        change = (after[name] - tensor).abs().max().item()
        assert 0 < change <= 0.0101, (name, change)


if __name__ == "__main__":
    {"save": save, "resume": resume}[sys.argv[2]](Path(sys.argv[1]))
