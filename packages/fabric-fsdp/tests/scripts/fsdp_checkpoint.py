"""Save FSDP checkpoints mid-training, then resume them at another world size.

Usage:
    python fsdp_checkpoint.py save OUT_DIR      (2 processes)
    python fsdp_checkpoint.py resume OUT_DIR    (1 process, from OUT_DIR/sharded)
    python fsdp_checkpoint.py cross OUT_DIR     (4 processes: other strategies, other sizes)

``save`` trains STEPS steps and writes OUT_DIR/sharded (DCP). A second model, built on the
meta device and sharded differently, loads it (2 ranks -> 2 ranks) and writes it as the full
file OUT_DIR/full.pt, which a third model loads. Then all three take the next step, and
their losses go to OUT_DIR/two_ranks.json. ``resume`` restores OUT_DIR/sharded in a single
process, takes the same step and writes OUT_DIR/one_rank.json. ``cross`` restores, at 4
processes, OUT_DIR/sharded under ``ddp`` and OUT_DIR/single.pt (written by a single-device
run) under ``fsdp``, and writes OUT_DIR/four_ranks.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import Block, full_state, model, optimizer, write_json

from fabric_core import Fabric
from fabric_ddp import DDPStrategy
from fabric_fsdp import FSDPStrategy

STEPS = 3
GLOBAL_BATCH = 8


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(GLOBAL_BATCH, 8, generator=generator), torch.randn(
        GLOBAL_BATCH, 1, generator=generator
    )


def train_step(fabric: Fabric, net: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    x, y = batch(step)
    x, y = x.chunk(fabric.world_size)[fabric.global_rank], y.chunk(fabric.world_size)[fabric.global_rank]
    fabric.backward(nn.functional.mse_loss(net(x), y))
    opt.step()
    opt.zero_grad()


def loss_at(net: nn.Module, step: int) -> float:
    """The loss of the whole global batch of ``step`` (every process computes the same)."""
    x, y = batch(step)
    with torch.no_grad():
        return nn.functional.mse_loss(net(x), y).item()


def continue_run(fabric: Fabric, net: nn.Module, opt: torch.optim.Optimizer) -> dict[str, float]:
    """The loss at the next step, then one more training step, and the loss after it."""
    next_loss = loss_at(net, STEPS)
    train_step(fabric, net, opt, STEPS)
    return {"next_loss": next_loss, "loss_after_step": loss_at(net, STEPS + 1)}


def save(fabric: Fabric, out_dir: Path) -> None:
    net = model()
    net, opt = fabric.setup(net, optimizer(net.parameters()))
    for step in range(STEPS):
        train_step(fabric, net, opt, step)
    loss_at(net, 0)  # a forward without backward before saving must not matter
    extra = {"note": "hello", "values": torch.arange(3), "nested": [1, {"a": 2.5}]}
    fabric.save(out_dir / "sharded", {"model": net, "optimizer": opt, "step": STEPS, "extra": extra})
    saved = full_state(net)

    # 2 ranks -> 2 ranks, into a model built on the meta device and sharded without a wrap policy
    full = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(state_dict_type="full"))
    twin, twin_opt = setup_on_meta(full)
    state: dict[str, Any] = {"model": twin, "optimizer": twin_opt, "step": 0}
    remainder = full.load(out_dir / "sharded", state)
    assert state["step"] == STEPS and remainder["extra"]["note"] == "hello", (state, remainder)
    assert torch.equal(remainder["extra"]["values"], torch.arange(3)) and remainder["extra"]["nested"] == [
        1,
        {"a": 2.5},
    ]
    assert all(torch.equal(value, saved[key]) for key, value in full_state(twin).items())
    full.save(out_dir / "full.pt", {"model": twin, "optimizer": twin_opt, "step": STEPS})

    # the full file back into a third model
    third = model()
    third, third_opt = full.setup(third, optimizer(third.parameters()))
    full.load(out_dir / "full.pt", {"model": third, "optimizer": third_opt, "step": 0})

    # a plain torch.save(model.state_dict()) file into a sharded model
    if full.is_global_zero:
        torch.save(saved, out_dir / "plain_state_dict.pt")
    full.barrier()
    fourth = full.setup(model())
    full.load_raw(out_dir / "plain_state_dict.pt", fourth)
    assert all(torch.equal(value, saved[key]) for key, value in full_state(fourth).items())

    results: dict[str, Any] = {
        "uninterrupted": continue_run(fabric, net, opt),
        "sharded_two_ranks": continue_run(full, twin, twin_opt),
        "full_file_two_ranks": continue_run(full, third, third_opt),
    }
    results["async"] = save_in_background(fabric, net, opt, out_dir)
    if fabric.is_global_zero:
        torch.save(saved, out_dir / "saved_params.pt")
        write_json(out_dir / "two_ranks.json", results)


def save_in_background(
    fabric: Fabric, net: nn.Module, opt: torch.optim.Optimizer, out_dir: Path
) -> dict[str, bool]:
    """Two asynchronous saves with a training step between them: each holds the values of its own moment."""
    saver = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(async_save=True))
    first = full_state(net)
    saver.save(out_dir / "async-1", {"model": net, "optimizer": opt})
    train_step(fabric, net, opt, STEPS + 1)  # goes on while the shards are written
    second = full_state(net)
    saver.save(out_dir / "async-2", {"model": net, "optimizer": opt})  # waits for the first
    restored = {}
    for name, expected in (("async-1", first), ("async-2", second)):
        twin, twin_opt = setup_on_meta(saver)
        saver.load(out_dir / name, {"model": twin, "optimizer": twin_opt})  # waits for the second
        restored[name] = all(torch.equal(value, expected[key]) for key, value in full_state(twin).items())
    return restored


def setup_on_meta(fabric: Fabric) -> tuple[nn.Module, torch.optim.Optimizer]:
    with fabric.init_module(empty_init=True):
        net = nn.Sequential(nn.Linear(8, 15), Block(15), Block(15), nn.Linear(15, 1))
    return fabric.setup(net, optimizer(net.parameters()))


def resume(out_dir: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, strategy=FSDPStrategy(auto_wrap_policy={Block}))
    net, opt = setup_on_meta(fabric)
    state: dict[str, Any] = {"model": net, "optimizer": opt, "step": 0}
    remainder = fabric.load(out_dir / "sharded", state)
    assert state["step"] == STEPS and set(remainder) == {"extra"}, (state, remainder)
    write_json(out_dir / "one_rank.json", continue_run(fabric, net, opt))


def cross(fabric: Fabric, out_dir: Path) -> None:
    """At 4 processes: ddp from the 2-process fsdp directory, fsdp from the single-device file."""
    results = {}
    results["ddp_from_sharded"] = _resume_under(fabric, out_dir / "sharded")
    sharded = Fabric(accelerator="cpu", devices=4, strategy=FSDPStrategy(auto_wrap_policy={Block}))
    results["fsdp_from_single_file"] = _resume_under(sharded, out_dir / "single.pt")
    if fabric.is_global_zero:
        write_json(out_dir / "four_ranks.json", results)


def _resume_under(fabric: Fabric, path: Path) -> dict[str, float]:
    net = model()
    net, opt = fabric.setup(net, optimizer(net.parameters()))
    state: dict[str, Any] = {"model": net, "optimizer": opt, "step": 0}
    fabric.load(path, state)
    assert state["step"] == STEPS, state
    return continue_run(fabric, net, opt)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        strategy = FSDPStrategy(auto_wrap_policy={Block}, start_method="fork")
        Fabric(accelerator="cpu", devices=2, strategy=strategy).launch(save, Path(sys.argv[2]))
    elif sys.argv[1] == "cross":
        strategy = DDPStrategy(start_method="fork")
        Fabric(accelerator="cpu", devices=4, strategy=strategy).launch(cross, Path(sys.argv[2]))
    else:
        resume(Path(sys.argv[2]))
