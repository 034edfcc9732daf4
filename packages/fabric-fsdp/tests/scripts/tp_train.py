"""Tensor parallel (x data parallel) training with ModelParallelStrategy on CPU processes.

Usage: python tp_train.py OUT_DIR DEVICES DATA_PARALLEL_SIZE [--meta] [--plan]

Rank 0 writes OUT_DIR/params.pt (the trained parameters, full tensors); every rank takes
part in writing the sharded checkpoint OUT_DIR/checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import full_state

from fabric_core import Fabric
from fabric_fsdp import ModelParallelStrategy

GLOBAL_BATCH = 8
STEPS = 6
LR = 0.01
MAX_NORM = 0.05


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.down(torch.tanh(self.up(x))))


def make() -> MLP:
    torch.manual_seed(3)
    return MLP()


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(7)
    samples = GLOBAL_BATCH * STEPS
    return TensorDataset(
        torch.randn(samples, 8, generator=generator), torch.randn(samples, 1, generator=generator)
    )


def parallelize(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Megatron-style MLP split over the tensor axis; everything sharded over the data axis."""
    parallelize_module(model, mesh["tensor_parallel"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
    fully_shard(model, mesh=mesh["data_parallel"])
    return model


def reference_run() -> tuple[MLP, torch.optim.Adam]:
    """The model and optimizer after training in one process, without fabric."""
    net = make()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for x, y in DataLoader(data(), batch_size=GLOBAL_BATCH):
        nn.functional.mse_loss(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
        opt.step()
        opt.zero_grad()
    return net, opt


def reference() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in reference_run()[0].state_dict().items()}


def main(fabric: Fabric, out_dir: Path, devices: int, data_parallel: int, meta: bool) -> None:
    strategy = fabric.strategy
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy.tensor_parallel_size == devices // data_parallel
    if meta:
        torch.manual_seed(3)
        with fabric.init_module(empty_init=True):
            net = MLP()
        assert all(p.is_meta for p in net.parameters())
    else:
        net = make()
    net, opt = fabric.setup(net, torch.optim.Adam(net.parameters(), lr=LR))
    assert isinstance(net.module.up.weight, DTensor)
    # column-wise over the tensor axis (then FSDP over the data axis): each process holds 16 / (dp * tp) rows
    assert net.module.up.weight.to_local().shape[0] == 16 // devices, net.module.up.weight.placements
    initial = full_state(net)
    assert all(torch.equal(initial[k], v) for k, v in make().state_dict().items()), "initial weights differ"
    loader = fabric.setup_dataloaders(DataLoader(data(), batch_size=GLOBAL_BATCH // data_parallel))
    for x, y in loader:
        fabric.backward(nn.functional.mse_loss(net(x), y))
        norm = fabric.clip_gradients(net, opt, max_norm=MAX_NORM)
        assert norm is not None and norm.item() > MAX_NORM  # clipping is active
        opt.step()
        opt.zero_grad()
    trained = full_state(net)
    fabric.save(out_dir / "checkpoint", {"model": net, "optimizer": opt, "steps": STEPS})
    if fabric.is_global_zero:
        torch.save(trained, out_dir / "params.pt")


if __name__ == "__main__":
    out, devices, data_parallel = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if "--plan" in sys.argv:  # the default parallelize function with a plan, instead of parallelize_fn
        split = {"tensor_parallel_plan": {"up": ColwiseParallel(), "down": RowwiseParallel()}}
    else:
        split = {"parallelize_fn": parallelize}
    strategy = ModelParallelStrategy(data_parallel_size=data_parallel, start_method="fork", **split)
    Fabric(accelerator="cpu", devices=devices, strategy=strategy).launch(
        main, out, devices, data_parallel, "--meta" in sys.argv
    )
