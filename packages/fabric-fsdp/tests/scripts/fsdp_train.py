"""Train with FSDP on 2 CPU processes in several configurations, one launch for all of them.

Usage: python fsdp_train.py OUT_DIR

Rank 0 writes OUT_DIR/<config>.pt (the trained parameters, full tensors) for each
configuration and OUT_DIR/facts.json (memory figures and other observations).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, ShardingStrategy
from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import (
    EPOCHS,
    MAX_NORM,
    PER_RANK_BATCH,
    Block,
    dataset,
    full_state,
    model,
    optimizer,
    training_bytes,
    write_json,
)

from fabric_core import Fabric
from fabric_fsdp import FSDPPrecision, FSDPStrategy

CONFIGS: dict[str, dict[str, Any]] = {
    "full_shard": {},
    "full_shard_wrap": {"auto_wrap_policy": {Block}},
    "shard_grad_op": {"sharding_strategy": "SHARD_GRAD_OP"},
    "shard_grad_op_wrap": {
        "sharding_strategy": ShardingStrategy.SHARD_GRAD_OP,
        "auto_wrap_policy": functools.partial(size_based_auto_wrap_policy, min_num_params=100),
    },
    "hybrid": {"sharding_strategy": "HYBRID_SHARD", "device_mesh": (2, 1)},
    "no_shard": {"sharding_strategy": "NO_SHARD"},
    "cpu_offload": {"cpu_offload": CPUOffloadPolicy(pin_memory=False), "auto_wrap_policy": {Block}},
}


def train(
    fabric: Fabric, net: nn.Module, accumulate: bool = False, clip: bool = False
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The data-parallel loop: each rank gets PER_RANK_BATCH samples per step (Adam)."""
    opt = optimizer(net.parameters())  # built before setup: the strategy re-points it at the shards
    net, opt = fabric.setup(net, opt)
    fit(fabric, net, opt, accumulate=accumulate, clip=clip)
    return net, opt


def fit(
    fabric: Fabric, net: nn.Module, opt: torch.optim.Optimizer, accumulate: bool = False, clip: bool = False
) -> None:
    """EPOCHS epochs of PER_RANK_BATCH samples per rank and step; optionally in two micro-batches, clipped."""
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=PER_RANK_BATCH))
    for _ in range(EPOCHS):
        for x, y in loader:
            if accumulate:
                halves = list(zip(x.chunk(2), y.chunk(2)))
                with fabric.no_backward_sync(net):
                    fabric.backward(nn.functional.mse_loss(net(halves[0][0]), halves[0][1]) / 2)
                fabric.backward(nn.functional.mse_loss(net(halves[1][0]), halves[1][1]) / 2)
            else:
                fabric.backward(nn.functional.mse_loss(net(x), y))
            if clip:
                fabric.clip_gradients(net, opt, max_norm=MAX_NORM)
            opt.step()
            opt.zero_grad()


def save(fabric: Fabric, out_dir: Path, name: str, net: nn.Module) -> None:
    state = full_state(net)
    if fabric.is_global_zero:
        torch.save(state, out_dir / f"{name}.pt")


def memory_ratio(fabric: Fabric) -> dict[str, Any]:
    """Per-rank bytes of parameters + gradients + Adam state, FSDP over DDP, after one step."""

    def one_step(strategy: Any) -> int:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
        f = Fabric(accelerator="cpu", devices=2, strategy=strategy)
        f.launch()
        net, opt = f.setup(net, torch.optim.Adam(net.parameters()))
        f.backward(net(torch.randn(4, 32)).sum())
        opt.step()
        return training_bytes(net, opt)

    fsdp, ddp = one_step("fsdp"), one_step("ddp")
    per_rank = fabric.all_gather(torch.tensor([fsdp, ddp])).tolist()
    return {"fsdp_bytes": [r[0] for r in per_rank], "ddp_bytes": [r[1] for r in per_rank]}


def staged_setup(fabric: Fabric, out_dir: Path) -> None:
    """setup_module, then an optimizer created over the shards, then setup_optimizers."""
    net = fabric.setup_module(model())
    assert all(isinstance(p, DTensor) for p in net.parameters())
    opt = fabric.setup_optimizers(optimizer(net.parameters()))
    fit(fabric, net, opt)
    save(fabric, out_dir, "staged_setup", net)


def meta_init(fabric: Fabric, out_dir: Path) -> dict[str, Any]:
    """A model built on the meta device: only local shards are allocated, initialised as a plain init would."""
    torch.manual_seed(1)
    with fabric.init_module(empty_init=True):
        net = nn.Sequential(nn.Linear(8, 15), Block(15), Block(15), nn.Linear(15, 1))
    on_meta = all(p.is_meta for p in net.parameters())
    opt = optimizer(net.parameters())
    net, opt = fabric.setup(net, opt)
    init = full_state(net)
    expected = model().state_dict()
    same_init = all(torch.equal(init[k], expected[k]) for k in expected)
    shapes = {k: list(p.to_local().shape) for k, p in net.module.named_parameters()}
    fit(fabric, net, opt)
    save(fabric, out_dir, "meta_init", net)
    return {"built_on_meta": on_meta, "init_equals_plain_init": same_init, "local_shapes": shapes}


def bf16(fabric: Fabric, out_dir: Path) -> dict[str, Any]:
    """bf16-mixed: parameters gathered in bfloat16 for compute, float32 shards and gradients."""
    net = model()
    seen: list[torch.dtype] = []
    net[0].register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
    net, opt = train(fabric, net)
    save(fabric, out_dir, "bf16_mixed", net)
    output = net(torch.randn(2, 8))
    return {
        "compute_dtypes": sorted({str(d) for d in seen}),
        "shard_dtypes": sorted({str(p.dtype) for group in opt.param_groups for p in group["params"]}),
        "output_dtype": str(output.dtype),
        "precision": type(fabric.strategy.precision).__name__,
    }


def fp16(fabric: Fabric) -> dict[str, Any]:
    """16-mixed: a sharded gradient scaler, unscaling before clipping."""
    _, opt = train(fabric, model(), clip=True)
    scaler = fabric.strategy.precision.scaler  # type: ignore[attr-defined]
    finite = all(
        bool(p.full_tensor().isfinite().all()) for group in opt.param_groups for p in group["params"]
    )
    return {"scaler": type(scaler).__name__, "scale": scaler.get_scale(), "finite": finite}


def main(fabric: Fabric, out_dir: Path) -> None:
    facts: dict[str, Any] = {}
    for name, kwargs in CONFIGS.items():
        f = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(**kwargs))
        f.launch()
        net, _ = train(f, model())
        if name == "full_shard_wrap":
            facts["wrapped"] = [type(m).__name__ for m in net.modules() if isinstance(m, FSDPModule)]
        save(f, out_dir, name, net)
    # accumulation without sync, clipping of sharded gradients, activation checkpointing,
    # forward prefetching and the FSDP1 compatibility flags, all in one run
    extras = FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing=Block,
        forward_prefetch=True,
        limit_all_gathers=True,
        use_orig_params=True,
        sync_module_states=True,
    )
    f = Fabric(accelerator="cpu", devices=2, strategy=extras)
    f.launch()
    save(f, out_dir, "accumulate_clip", train(f, model(), accumulate=True, clip=True)[0])
    staged_setup(Fabric(accelerator="cpu", devices=2, strategy="fsdp"), out_dir)
    f = Fabric(accelerator="cpu", devices=2, strategy="fsdp_cpu_offload")
    facts["offload_strategy"] = repr(f.strategy)
    save(f, out_dir, "cpu_offload_name", train(f, model())[0])
    facts["meta_init"] = meta_init(Fabric(accelerator="cpu", devices=2, strategy="fsdp"), out_dir)
    facts["bf16"] = bf16(
        Fabric(accelerator="cpu", devices=2, strategy="fsdp", precision="bf16-mixed"), out_dir
    )
    # Fabric(precision="16-mixed") runs as bf16-mixed on a CPU; the plugin itself insists on float16
    fp16_strategy = FSDPStrategy(precision_plugin=FSDPPrecision("float16", "cpu"))
    facts["fp16"] = fp16(Fabric(accelerator="cpu", devices=2, strategy=fp16_strategy))
    facts["memory"] = memory_ratio(fabric)
    if fabric.is_global_zero:
        write_json(out_dir / "facts.json", facts)


if __name__ == "__main__":
    # Forked workers inherit the imported modules: cheaper than starting two interpreters.
    launcher = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(start_method="fork"))
    launcher.launch(main, Path(sys.argv[1]))
