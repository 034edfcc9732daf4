"""Real per-rank bytes of parameters, gradients and Adam state under FSDP2 and ModelParallelStrategy.

Usage: python memory_estimate.py OUT_DIR

Four forked launches of two processes: ``fsdp`` on :func:`build` (float32, then
``bf16-mixed``: float32 shards, bfloat16 all-gathers), ``model_parallel``
with the tensor-parallel plan of ``tp_train.py``, and ``model_parallel_default`` (no plan:
FSDP2 over the data-parallel axis) on :func:`build`. Rank 0 writes OUT_DIR/<case>.json with
the bytes of its local shards (DTensor ``to_local()``), for the test to compare with
``estimate_memory``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import local_bytes
from tp_train import MLP, parallelize

from fabric_core import Fabric
from fabric_fsdp import FSDPStrategy, ModelParallelStrategy


def build() -> nn.Module:
    """Odd row counts (257, 3): shards are uneven over two processes."""
    return nn.Sequential(nn.Linear(512, 257), nn.Tanh(), nn.Linear(257, 3))


def measure(fabric: Fabric, out: Path, case: str, factory: type[nn.Module] | object, width: int) -> None:
    torch.manual_seed(0)
    net = factory()  # type: ignore[operator]
    model, optimizer = fabric.setup(net, torch.optim.Adam(net.parameters(), lr=0.01))
    params = list(model.parameters())
    fabric.backward(model(torch.randn(4, width)).square().mean())
    gradients = local_bytes(p.grad for p in params)
    optimizer.step()
    state = local_bytes(v for s in optimizer.state.values() for v in s.values())
    if fabric.is_global_zero:
        (out / f"{case}.json").write_text(
            json.dumps({"parameters": local_bytes(params), "gradients": gradients, "optimizer": state})
        )
    fabric.barrier()


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    fsdp = FSDPStrategy(start_method="fork")
    Fabric(accelerator="cpu", devices=2, strategy=fsdp).launch(measure, out_dir, "fsdp", build, 512)
    mixed = FSDPStrategy(start_method="fork")
    Fabric(accelerator="cpu", devices=2, strategy=mixed, precision="bf16-mixed").launch(
        measure, out_dir, "fsdp_bf16_mixed", build, 512
    )
    tensor_parallel = ModelParallelStrategy(parallelize_fn=parallelize, start_method="fork")
    Fabric(accelerator="cpu", devices=2, strategy=tensor_parallel).launch(
        measure, out_dir, "model_parallel", MLP, 8
    )
    default = ModelParallelStrategy(start_method="fork")
    Fabric(accelerator="cpu", devices=2, strategy=default).launch(
        measure, out_dir, "model_parallel_default", build, 512
    )
