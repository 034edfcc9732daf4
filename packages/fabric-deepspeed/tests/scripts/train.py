"""Train under several DeepSpeed configurations in one 2-process CPU launch, one Fabric per case.

Usage: python train.py OUT_DIR CASE [CASE ...]

The first Fabric's ``launch()`` re-runs this script in two processes; every later Fabric
joins them. Rank 0 writes ``OUT_DIR/<case>.pt`` with the trained float32 parameters, the
losses and the precision DeepSpeed trained in. The cases ``loop0`` ... ``loop3`` run the
loop of ``one_loop.py`` at that ZeRO stage instead (it writes ``OUT_DIR/loop<stage>.pt``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
import one_loop
from common import EPOCHS, PER_RANK_BATCH, dataset, full_state_dict, model, no_ops_compiled, optimizer

from fabric_core import Fabric

# case -> (Fabric arguments, build the model under fabric.init_module(), accumulate over two halves)
CASES: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "stage1": ({"strategy": "deepspeed_stage_1"}, False, True),
    "stage2": ({"strategy": "deepspeed"}, False, False),
    "stage3": ({"strategy": "deepspeed_stage_3"}, False, False),
    "offload2": ({"strategy": "deepspeed_stage_2_offload"}, False, False),
    "offload3": ({"strategy": "deepspeed_stage_3_offload"}, False, False),
    "init3": ({"strategy": "deepspeed_stage_3"}, True, False),
    "bf16": ({"strategy": "deepspeed_stage_2", "precision": "bf16-mixed"}, False, False),
}


def train(fabric: Fabric, init_module: bool, accumulate: bool) -> dict[str, Any]:
    if init_module:
        with fabric.init_module():
            net = model()
        parameters = list(net.parameters())
        assert all(hasattr(p, "ds_id") and p.numel() == 0 for p in parameters), "zero.Init did not partition"
    else:
        net = model()
    net, opt = fabric.setup(net, optimizer(net.parameters()))
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=PER_RANK_BATCH))
    losses = []
    for _ in range(EPOCHS):
        for x, y in loader:
            if accumulate:
                (x1, x2), (y1, y2) = x.chunk(2), y.chunk(2)
                with fabric.no_backward_sync(net):
                    fabric.backward(nn.functional.mse_loss(net(x1), y1) / 2)
                loss = nn.functional.mse_loss(net(x2), y2) / 2
            else:
                loss = nn.functional.mse_loss(net(x), y)
            assert loss.dtype == torch.float32, loss.dtype
            fabric.backward(loss)
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    check_refusals(fabric, net, opt)
    engine_dtype = next(net.module.parameters()).dtype
    return {"params": full_state_dict(net.module), "losses": losses, "dtype": engine_dtype}


def check_refusals(fabric: Fabric, net: Any, opt: Any) -> None:
    """What DeepSpeed cannot do is refused in words, not done wrong."""
    expect(
        NotImplementedError,
        "fabric.setup(model, optimizer)",
        lambda: fabric.setup_optimizers(optimizer([nn.Parameter(torch.zeros(1))])),
    )
    expect(ValueError, "L2 norm", lambda: fabric.clip_gradients(net, opt, max_norm=1.0, norm_type=1.0))
    expect(RuntimeError, "no group can be added", lambda: opt.add_param_group({"params": []}))
    expect(RuntimeError, "fabric.load(path", lambda: opt.load_state_dict(opt.state_dict()))
    expect(ValueError, "twice", lambda: fabric.setup(net.module, optimizer(net.module.parameters())))
    # last: the engine is left with nan gradients
    fabric.backward(nn.functional.mse_loss(net(torch.full((2, 8), float("nan"))), torch.zeros(2, 1)))
    expect(RuntimeError, "cannot be clipped", lambda: fabric.clip_gradients(net, opt, max_norm=1.0))


def expect(error: type[Exception], words: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except error as raised:
        assert words in str(raised), raised
    else:
        raise AssertionError(f"expected {error.__name__}")


def main(out_dir: Path, cases: list[str]) -> None:
    for case in cases:
        if case.startswith("loop"):
            one_loop.run(out_dir, int(case.removeprefix("loop")))
            continue
        arguments, init_module, accumulate = CASES[case]
        fabric = Fabric(accelerator="cpu", devices=2, **arguments)
        fabric.launch()
        result = train(fabric, init_module, accumulate)
        result["precision"] = fabric.strategy.precision.precision
        if fabric.is_global_zero:
            torch.save(result, out_dir / f"{case}.pt")
        fabric.barrier()
    no_ops_compiled()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
