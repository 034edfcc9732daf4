"""The training loop the benchmarks compare, written once for each framework.

One tiny model (``Linear(32, 64) -> ReLU -> Linear(64, 1)``, batch 16, ``SGD(lr=0.01)``, MSE
loss), so that the Python cost of a framework's wrappers is not hidden behind the model's
arithmetic. Each ``*_loop`` function sets a copy of the model up the way that framework's
documentation does and returns ``loop(batches)``, which trains on every batch in turn with the
loop a user would write:

- ``torch``: ``loss.backward(); optimizer.step(); optimizer.zero_grad()``; in bf16-mixed the
  forward runs under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and the output is cast to
  float32 before the loss;
- ``fabric``: ``model, optimizer = fabric.setup(model, optimizer)`` and ``fabric.backward(loss)``;
- ``lightning``: the same with ``lightning.fabric.Fabric`` (when ``lightning`` is installed);
- ``accelerate``: ``accelerator.prepare(model, optimizer)`` and ``accelerator.backward(loss)``
  (when ``accelerate`` is installed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BATCH = 16
LR = 0.01
MODEL = "Linear(32, 64) -> ReLU -> Linear(64, 1)"
PRECISIONS = ("32-true", "bf16-mixed")
OPTIONAL = {"lightning": "lightning", "accelerate": "accelerate"}
"""Framework name -> the distribution that provides it (compared only when installed)."""

Batches = list[tuple[Tensor, Tensor]]
Loop = Callable[[Batches], None]


def tiny_model(seed: int = 0) -> nn.Module:
    """The benchmark's model, with weights fixed by ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))


def make_batches(steps: int, seed: int = 1) -> Batches:
    """``steps`` pre-made ``(x, y)`` batches, the same for every framework."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH, 32, generator=generator), torch.randn(BATCH, 1, generator=generator))
        for _ in range(steps)
    ]


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer every loop uses."""
    return torch.optim.SGD(model.parameters(), lr=LR)


def frameworks() -> list[str]:
    """The frameworks this environment can compare: torch and fabric, and the optional ones installed."""
    return ["torch", "fabric", *(name for name, module in OPTIONAL.items() if find_spec(module) is not None)]


def torch_loop(model: nn.Module, precision: str) -> Loop:
    """The hand-written loop."""
    optimizer = sgd(model)
    if precision == "bf16-mixed":

        def mixed(batches: Batches) -> None:
            for x, y in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    output = model(x)
                loss = F.mse_loss(output.float(), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

        return mixed

    def loop(batches: Batches) -> None:
        for x, y in batches:
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return loop


def fabric_loop(model: nn.Module, precision: str) -> Loop:
    """The loop through ``fabric_core.Fabric``."""
    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    return _fabric_style_loop(fabric, model)


def lightning_loop(model: nn.Module, precision: str) -> Loop:
    """The loop through ``lightning.fabric.Fabric``."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)  # type: ignore[arg-type]
    return _fabric_style_loop(fabric, model)


def _fabric_style_loop(fabric: Any, model: nn.Module) -> Loop:
    wrapped, optimizer = fabric.setup(model, sgd(model))

    def loop(batches: Batches) -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return loop


def accelerate_loop(model: nn.Module, precision: str) -> Loop:
    """The loop through ``accelerate.Accelerator`` (its process-wide state is reset first)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if precision == "bf16-mixed" else "no")
    wrapped, optimizer = accelerator.prepare(model, sgd(model))

    def loop(batches: Batches) -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return loop


LOOPS: dict[str, Callable[[nn.Module, str], Loop]] = {
    "torch": torch_loop,
    "fabric": fabric_loop,
    "lightning": lightning_loop,
    "accelerate": accelerate_loop,
}


def build_loops(
    names: list[str], precision: str, initial: nn.Module
) -> tuple[dict[str, Loop], dict[str, nn.Module]]:
    """One loop per name (``"torch"``, ``"fabric"``, ...; a name may repeat with a suffix after ``" "``),
    each training its own copy of ``initial``; also the copies, to compare the weights afterwards."""
    models = {name: copy.deepcopy(initial) for name in names}
    loops = {name: LOOPS[name.split(" ")[0]](models[name], precision) for name in names}
    return loops, models


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB, from its own start (not its parent's).

    ``ru_maxrss`` survives ``exec``: a process started by a parent that had torch loaded
    reports the parent's peak until it exceeds it. ``VmHWM`` in ``/proc/self/status``
    belongs to this process's own memory map, so it is used where it exists (Linux).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def same_weights(models: list[nn.Module]) -> bool:
    """Whether every model ended with the first one's weights, bit for bit."""
    first = [p.detach() for p in models[0].parameters()]
    return all(
        all(torch.equal(a, b.detach()) for a, b in zip(first, other.parameters(), strict=True))
        for other in models[1:]
    )
