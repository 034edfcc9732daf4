"""Pipeline (x data parallel) training with ModelParallelStrategy on CPU processes.

Usage: python pp_train.py OUT_DIR DEVICES DATA_PARALLEL_SIZE SCHEDULE [REPLICAS [TENSOR]]

DEVICES // (DATA_PARALLEL_SIZE * TENSOR) pipeline stages, run by SCHEDULE (``1F1B``, ``GPipe``;
``none`` without a pipeline); REPLICAS > 1 splits the data-parallel axis into replicas of
shards (HSDP); TENSOR > 1 splits the linear layers Megatron-style over a tensor-parallel axis.

The loop is the plain one written with ``fabric.forward_backward``: clipping by norm, a
``LambdaLR`` schedule, and a sharded checkpoint saved at the end (OUT_DIR/checkpoint).
Rank 0 writes OUT_DIR/record.json: the per-step losses and clipping norms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric
from fabric_fsdp import ModelParallelStrategy

GLOBAL_BATCH = 8
STEPS = 6
LR = 0.05
MAX_NORM = 0.5
SPLIT = ["2"]
"""Stage 0: Linear + Tanh; stage 1: Linear + Tanh + Linear."""


def make() -> nn.Sequential:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(11)
    samples = GLOBAL_BATCH * STEPS
    return TensorDataset(
        torch.randn(samples, 8, generator=generator), torch.randn(samples, 1, generator=generator)
    )


def parallelize(stage: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """The first linear layer column-wise, the second row-wise (each on the stage that holds it), then FSDP."""
    plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
    parallelize_module(stage, mesh["tensor_parallel"], {k: v for k, v in plan.items() if k in stage._modules})
    fully_shard(stage, mesh=mesh["data_parallel"])
    return stage


def schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))


def train(fabric: Fabric, net: nn.Module, opt: torch.optim.Optimizer, batch: int) -> dict[str, list[float]]:
    """The loop under test; with one process and plain modules it is the reference."""
    scheduler = schedule(opt)
    record: dict[str, list[float]] = {"losses": [], "norms": []}
    for x, y in fabric.setup_dataloaders(DataLoader(data(), batch_size=batch)):
        loss = fabric.forward_backward(net, x, target=y, loss_fn=nn.functional.mse_loss)
        norm = fabric.clip_gradients(net, opt, max_norm=MAX_NORM)
        opt.step()
        scheduler.step()
        opt.zero_grad()
        # each data-parallel replica's loss is that of its own samples (as in any loop): average them
        record["losses"].append(float(fabric.all_reduce(loss, reduce_op="mean")))
        record["norms"].append(float(norm))
    return record


def reference() -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """One process, the whole batch, no pipeline: the record and the trained parameters."""
    fabric = Fabric(accelerator="cpu", devices=1)
    net = make()
    net, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9))
    record = train(fabric, net, opt, GLOBAL_BATCH)
    return record, {k: v.detach().clone() for k, v in net.state_dict().items()}


def main(fabric: Fabric, out_dir: Path, data_parallel: int, replicas: int) -> None:
    strategy = fabric.strategy
    assert isinstance(strategy, ModelParallelStrategy)
    names = strategy.device_mesh.mesh_dim_names or ()
    if strategy.pipeline_parallel_size > 1:
        assert names[0] == "pipeline_parallel", names
    if replicas > 1:
        assert "data_replicate" in names and strategy.device_mesh["data_parallel"].size() == data_parallel
    net = make()
    net, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9))
    if strategy.pipeline_parallel_size > 1:
        stage = fabric.global_rank // (data_parallel * strategy.tensor_parallel_size)
        kept = sorted(net.module._modules)
        assert kept == (["0", "1"] if stage == 0 else ["2", "3", "4"]), kept
        assert len(opt.param_groups[0]["params"]) == (2 if stage == 0 else 4)
        try:
            net(torch.randn(2, 8))
        except RuntimeError as error:
            assert "fabric.forward_backward" in str(error), error
        else:
            raise AssertionError("calling one stage of a pipeline directly must fail")
    if replicas > 1:  # hybrid sharding: each weight is split over the shard axis, replicated over the other
        placements = [type(p).__name__ for p in net.module[0].weight.placements]
        assert placements == ["Replicate", "Shard"], placements
    record = train(fabric, net, opt, GLOBAL_BATCH // data_parallel)
    fabric.save(out_dir / "checkpoint", {"model": net, "optimizer": opt, "steps": STEPS})
    if fabric.is_global_zero:
        (out_dir / "record.json").write_text(json.dumps(record))


if __name__ == "__main__":
    out, devices, data_parallel, kind = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    replicas = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    tensor = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    pipeline = {} if kind == "none" else {"pipeline_split": SPLIT, "pipeline_schedule": kind}
    strategy = ModelParallelStrategy(
        parallelize_fn=parallelize if tensor > 1 else None,
        data_parallel_size=data_parallel,
        tensor_parallel_size=tensor,
        data_parallel_replicate_size=replicas,
        pipeline_parallel_size=devices // (data_parallel * tensor),
        start_method="fork",
        **pipeline,
    )
    Fabric(accelerator="cpu", devices=devices, strategy=strategy).launch(main, out, data_parallel, replicas)
