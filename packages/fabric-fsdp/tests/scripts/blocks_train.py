"""Activation checkpointing and regional compile per block, on 2 CPU processes, one launch for all checks.

Usage: python blocks_train.py OUT_DIR

Rank 0 writes OUT_DIR/facts.json: the losses of each configuration and of one process with
twice the batch, how often the blocks ran forward, how many elements the compiled forward
graphs keep for backward, and what a full checkpoint holds; OUT_DIR/model.pt is that
checkpoint.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._functorch.aot_autograd import make_boxed_func

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_common import write_json

from fabric_core import Fabric
from fabric_fsdp import FSDPStrategy, ModelParallelStrategy
from fabric_fsdp._blocks import is_checkpointed, is_compiled

STEPS = 4
PER_RANK = 4
WIDTH = 16
FORWARD_CALLS = [0]
SAVED: list[int] = []


class Block(nn.Module):
    """The unit each strategy checkpoints, compiles and shards."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            FORWARD_CALLS[0] += 1
        return x + torch.tanh(self.linear(self.norm(x)))


def model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(8, WIDTH), Block(WIDTH), Block(WIDTH), nn.Linear(WIDTH, 1))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(2 * PER_RANK, 8, generator=generator), torch.randn(2 * PER_RANK, 1, generator=generator))
        for _ in range(STEPS)
    ]


def _count_saved(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
    """Forward graph compiler: record how many elements the graph returns (outputs + kept for backward)."""
    output = next(node for node in gm.graph.nodes if node.op == "output")
    values = [arg.meta.get("val") for arg in output.args[0] if isinstance(arg, torch.fx.Node)]
    SAVED.append(sum(v.numel() for v in values if isinstance(v, torch.Tensor)))
    return make_boxed_func(gm)


COUNTING = aot_autograd(fw_compiler=_count_saved, bw_compiler=lambda gm, example_inputs: make_boxed_func(gm))


def reference_losses() -> list[float]:
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for x, y in batches():
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def train(fabric: Fabric, net: nn.Module) -> tuple[nn.Module, list[float], dict[str, Any]]:
    """STEPS steps of SGD, each rank on its half of the batch; the losses averaged over ranks."""
    torch._dynamo.reset()
    counters.clear()
    SAVED.clear()
    FORWARD_CALLS[0] = 0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net, opt = fabric.setup(net, opt)
    losses, graphs = [], []
    for x, y in batches():
        rank = fabric.global_rank
        loss = nn.functional.mse_loss(net(x.chunk(2)[rank]), y.chunk(2)[rank])
        fabric.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(float(fabric.all_reduce(loss.detach(), reduce_op="mean")))
        graphs.append(counters["stats"]["unique_graphs"])
    blocks = [m for m in net.modules() if isinstance(m, Block)]
    facts = {
        "forward_calls_per_step": FORWARD_CALLS[0] / STEPS,
        "saved_elements": list(SAVED),
        "unique_graphs_per_step": graphs,
        "checkpointed": [is_checkpointed(b) for b in blocks],
        "compiled": [is_compiled(b) for b in blocks],
        "returned": type(net.module).__name__,
        "called": type(net._call_module).__name__,
    }
    return net, losses, facts


def main(launcher: Fabric, out_dir: Path) -> None:
    facts: dict[str, Any] = {"reference": reference_losses()}
    wrap = {"auto_wrap_policy": {Block}}
    configs: dict[str, Any] = {
        "eager": FSDPStrategy(**wrap),
        "eager_checkpointed": FSDPStrategy(**wrap, activation_checkpointing=True),
        "compiled": FSDPStrategy(**wrap, compile_blocks={"backend": COUNTING}),
        "checkpointed_compiled": FSDPStrategy(
            **wrap,
            activation_checkpointing=True,
            compile_blocks={"backend": COUNTING},
            state_dict_type="full",
        ),
        "model_parallel": ModelParallelStrategy(
            activation_checkpointing=True, compile_blocks={"backend": "aot_eager"}
        ),
    }
    for name, strategy in configs.items():
        fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
        fabric.launch()
        net, losses, facts[name] = train(fabric, model())
        facts[name]["losses"] = losses
        if name == "checkpointed_compiled":
            fabric.save(out_dir / "model.pt", {"model": net})
    # fabric.setup(torch.compile(model)) with compile_blocks: per-block compile instead, said once
    fabric = Fabric(
        accelerator="cpu",
        devices=2,
        strategy=FSDPStrategy(**wrap, activation_checkpointing=True, compile_blocks={"backend": "aot_eager"}),
    )
    fabric.launch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, losses, facts["whole_model_compile"] = train(fabric, torch.compile(model(), backend="aot_eager"))
    facts["whole_model_compile"]["losses"] = losses
    facts["whole_model_compile"]["warnings"] = [
        str(w.message) for w in caught if "compile_blocks" in str(w.message)
    ]
    if launcher.is_global_zero:
        write_json(out_dir / "facts.json", facts)


if __name__ == "__main__":
    launcher = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy(start_method="fork"))
    launcher.launch(main, Path(sys.argv[1]))
