"""The researcher's loop of issue 10 under DeepSpeed, and the same loop in plain PyTorch on one process.

``train.py`` runs it for the cases ``loop0`` ... ``loop3`` (the ZeRO stage), each with one
Fabric after the other in the launch's two CPU processes (:func:`run`):

- ``full``: ``STEPS`` optimizer steps, each accumulating ``ACCUMULATE`` micro-batches under
  ``fabric.no_backward_sync(model, enabled=not last)``, then
  ``fabric.clip_gradients(max_norm=MAX_NORM)``, ``optimizer.step()`` and a ``LambdaLR``
  built on the optimizer ``fabric.setup`` returned. The state is saved with ``fabric.save``
  after ``RESUME_AT`` steps.
- ``resume``: a differently initialised model, its scheduler built on the plain optimizer
  before ``fabric.setup(model, optimizer, scheduler=...)``, restored with ``fabric.load``
  and trained on to ``STEPS``.
- ``value``: ``VALUE_STEPS`` steps with ``fabric.clip_gradients(clip_val=CLIP_VAL)``; at
  stage 3 under the seed's offloading config.
- ``deferred`` (stage 0 only): bf16, whose DeepSpeed optimizer computes the norm only in
  its step: the tensor ``clip_gradients`` returned is filled by ``optimizer.step()``.

Rank 0 writes ``OUT_DIR/loop<stage>.pt``: per run the losses (the all-reduced mean of the
micro-batch losses), the norms ``clip_gradients`` returned, the learning rates used and
fabric's warnings; for ``value`` the trained parameters. :func:`reference` computes the
same numbers on one process without fabric.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import full_state_dict, no_ops_compiled

STEPS = 6
RESUME_AT = 3
VALUE_STEPS = 2
ACCUMULATE = 2
GLOBAL_BATCH = 8
WORLD_SIZE = 2
LR = 0.05
MAX_NORM = 0.5
CLIP_VAL = 0.02
SEED_CONFIG = {
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu"},
        "offload_param": {"device": "cpu"},
    },
    "train_micro_batch_size_per_gpu": 1,
}
"""The seed's "DeepSpeed with custom configuration" snippet."""


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(42)
    samples = STEPS * ACCUMULATE * GLOBAL_BATCH
    x = torch.randn(samples, 8, generator=generator)
    y = torch.sin(x @ torch.randn(8, 1, generator=generator)) + 0.1 * torch.randn(
        samples, 1, generator=generator
    )
    return TensorDataset(x, y)


def build_model(seed: int = 1234) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def build_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def schedule(step: int) -> float:
    return 0.8**step


def record() -> dict[str, list[Any]]:
    return {"losses": [], "norms": [], "lrs": []}


# -- one process, plain PyTorch ----------------------------------------------------------


def reference() -> dict[str, Any]:
    """The runs of :func:`train` on one process with the global batch, without fabric."""
    batches = list(DataLoader(dataset(), batch_size=GLOBAL_BATCH))
    full = record()
    model = build_model()
    optimizer = build_optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    for step in range(STEPS):
        full["lrs"].append(optimizer.param_groups[0]["lr"])
        loss = 0.0
        for x, y in batches[step * ACCUMULATE : (step + 1) * ACCUMULATE]:
            micro = nn.functional.mse_loss(model(x), y)
            (micro / ACCUMULATE).backward()
            loss += micro.item() / ACCUMULATE
        full["norms"].append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item())
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        full["losses"].append(loss)
    model = build_model()
    optimizer = build_optimizer(model)
    for x, y in batches[:VALUE_STEPS]:
        nn.functional.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), CLIP_VAL)
        optimizer.step()
        optimizer.zero_grad()
    return {"full": full, "value": {k: v.detach().clone() for k, v in model.state_dict().items()}}


# -- two processes, DeepSpeed --------------------------------------------------------------


def train(fabric: Any, mode: str, checkpoint: Path) -> dict[str, Any]:
    """One run of the loop (``full`` or ``resume``); returns what rank 0 records."""
    if mode == "full":
        model = build_model()
        model, optimizer = fabric.setup(model, build_optimizer(model))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    else:
        model = build_model(seed=7)
        plain = build_optimizer(model)
        model, optimizer, scheduler = fabric.setup(
            model, plain, scheduler=torch.optim.lr_scheduler.LambdaLR(plain, schedule)
        )
    assert isinstance(optimizer, torch.optim.SGD), type(optimizer).__mro__
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=GLOBAL_BATCH // fabric.world_size))
    batches = list(loader)
    step = 0
    if mode == "resume":
        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 0}
        assert fabric.load(checkpoint, state) == {}
        step = state["step"]
        assert step == RESUME_AT, step
    result = record()
    while step < STEPS:
        result["lrs"].append(optimizer.param_groups[0]["lr"])
        loss = 0.0
        for micro in range(ACCUMULATE):
            x, y = batches[step * ACCUMULATE + micro]
            last = micro == ACCUMULATE - 1
            with fabric.no_backward_sync(model, enabled=not last):
                micro_loss = nn.functional.mse_loss(model(x), y)
                fabric.backward(micro_loss / ACCUMULATE)
            loss += fabric.all_reduce(micro_loss.detach(), reduce_op="mean").item() / ACCUMULATE
        norm = fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        step += 1
        result["losses"].append(loss)
        result["norms"].append(norm.item())
        if mode == "full" and step == RESUME_AT:
            fabric.save(
                checkpoint, {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": step}
            )
    return result


def train_with_value_clipping(fabric: Any) -> dict[str, torch.Tensor]:
    model = build_model()
    model, optimizer = fabric.setup(model, build_optimizer(model))
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=GLOBAL_BATCH // fabric.world_size))
    for _, (x, y) in zip(range(VALUE_STEPS), loader):
        fabric.backward(nn.functional.mse_loss(model(x), y))
        assert fabric.clip_gradients(model, optimizer, clip_val=CLIP_VAL) is None
        optimizer.step()
        optimizer.zero_grad()
    return full_state_dict(model.module)


def norm_filled_by_the_step(fabric: Any) -> dict[str, Any]:
    model = build_model()
    model, optimizer = fabric.setup(model, build_optimizer(model))
    x, y = next(
        iter(fabric.setup_dataloaders(DataLoader(dataset(), batch_size=GLOBAL_BATCH // fabric.world_size)))
    )
    fabric.backward(nn.functional.mse_loss(model(x), y))
    norm = fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    before = norm.item()
    optimizer.step()
    return {"before": before, "after": norm.item(), "engine": optimizer.engine.get_global_grad_norm()}


def run(out_dir: Path, stage: int) -> None:
    """Every run of the module docstring at ZeRO ``stage``; rank 0 saves ``out_dir/loop<stage>.pt``."""
    from fabric_core import Fabric
    from fabric_deepspeed import DeepSpeedStrategy

    def fabric_for(strategy: Any = None, **kwargs: Any) -> Any:
        fabric = Fabric(
            accelerator="cpu", devices=WORLD_SIZE, strategy=strategy or DeepSpeedStrategy(stage), **kwargs
        )
        fabric.launch()
        return fabric

    results: dict[str, Any] = {}
    checkpoint = out_dir / f"checkpoint{stage}"
    runs = {
        "full": lambda: train(fabric_for(), "full", checkpoint),
        "resume": lambda: train(fabric_for(), "resume", checkpoint),
        "value": lambda: train_with_value_clipping(
            fabric_for(DeepSpeedStrategy(config=SEED_CONFIG) if stage == 3 else None)
        ),
    }
    if stage == 0:
        runs["deferred"] = lambda: norm_filled_by_the_step(fabric_for(precision="bf16-mixed"))
    for name, run_once in runs.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[name] = run_once()
        results[f"{name}_warnings"] = [str(w.message) for w in caught if "fabric" in str(w.message)]
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(results, out_dir / f"loop{stage}.pt")
    no_ops_compiled()
