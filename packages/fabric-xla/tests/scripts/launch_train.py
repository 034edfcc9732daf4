"""``fabric.launch(fn)`` with ``xla`` and ``xla_fsdp`` on every device given (one process per device).

Each process trains on its shard of a global batch; rank 0's result (collective results,
the trained parameters, the reloaded checkpoint) comes back through the launcher and is
printed as JSON. Run with ``devices`` = 1 on XLA:CPU, or -1 on a TPU host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from xla_helpers import BATCH, cpu_state, loss_of, make_batches, make_model, make_optimizer

from fabric_core import Fabric
from fabric_xla._fsdp_state import gather_full_state_dict


def set_up(fabric: Fabric, strategy: str) -> tuple[Any, Any]:
    if strategy == "xla_fsdp":
        model = fabric.setup_module(make_model())
        return model, fabric.setup_optimizers(make_optimizer(model, "adam"))
    model = make_model()
    return fabric.setup(model, make_optimizer(model, "adam"))


def full_state(fabric: Fabric, model: Any, strategy: str) -> dict[str, list[Any]]:
    if strategy == "xla_fsdp":
        state = gather_full_state_dict(model._forward_module, keep=fabric.is_global_zero)
    else:
        state = cpu_state(model)
    return {key: value.tolist() for key, value in state.items()}


def train(fabric: Fabric, strategy: str, folder: Path) -> dict[str, Any]:
    world, rank = fabric.world_size, fabric.global_rank
    report: dict[str, Any] = {
        "world_size": world,
        "sum_of_ranks": fabric.all_reduce(torch.tensor([float(rank)]), reduce_op="sum").item(),
        "max_rank": fabric.all_reduce(torch.tensor(rank), reduce_op="max").item(),
        "gathered_ranks": fabric.all_gather(torch.tensor([rank])).flatten().tolist(),
        # Python numbers are communicated as tensors, by fabric and by the strategy itself.
        "sum_of_rank_numbers": fabric.all_reduce(float(rank), reduce_op="sum").item(),
        "strategy_mean_of_ranks": fabric.strategy.reduce(rank, None, None).item(),
        "strategy_gathered_numbers": fabric.strategy.all_gather(rank).flatten().tolist(),
        "broadcast": fabric.broadcast({"from": rank, "padding": "x" * (rank + 1)}, src=world - 1),
        "sampler": fabric.strategy.distributed_sampler_kwargs,
    }
    fabric.barrier()
    model, optimizer = set_up(fabric, strategy)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    losses = []
    for inputs, targets in make_batches(size=BATCH * world):
        loss = loss_of(model, fabric.to_device((inputs[mine], targets[mine])))
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(fabric.all_reduce(loss.detach(), reduce_op="mean").item())
    report["losses"] = losses
    report["state"] = full_state(fabric, model, strategy)
    fabric.save(folder / strategy, {"model": model, "optimizer": optimizer, "world": world})
    fresh, fresh_optimizer = set_up(fabric, strategy)
    loaded = {"model": fresh, "optimizer": fresh_optimizer, "world": 0}
    fabric.load(folder / strategy, loaded)
    report["reloaded_world"] = loaded["world"]
    report["reloaded_state"] = full_state(fabric, fresh, strategy)
    return report


def run_all(devices: int, folder: Path) -> dict[str, Any]:
    """Rank 0's report for each strategy."""
    return {
        strategy: Fabric(strategy=strategy, devices=devices).launch(train, strategy, folder)
        for strategy in ("xla", "xla_fsdp")
    }


if __name__ == "__main__":
    print(json.dumps(run_all(int(sys.argv[1]), Path(sys.argv[2]))))
