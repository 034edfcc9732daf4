"""Checks of set-up, training, gradient synchronisation, checkpoints and teardown.

Each check builds the same toy model on every rank (same seed) and compares what the
strategy produces with plain single-process PyTorch on the same data. Models are compared
through their outputs on a fixed batch, which works for replicated and sharded parameters
alike.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core.testing import _toy
from fabric_core.testing._expect import Expect, local_tensor
from fabric_core.testing._plan import Plan
from fabric_core.wrappers import FabricModule, FabricOptimizer, unwrap

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = [
    "check_checkpoint",
    "check_no_backward_sync",
    "check_setup",
    "check_teardown",
    "check_training",
    "verify_no_backward_sync",
]

TRAINING_STEPS = 4


def _set_up(fabric: Fabric, plan: Plan, model: nn.Module) -> tuple[Any, Any]:
    if plan.setup == "together":
        return fabric.setup(model, _toy.make_optimizer(model.parameters()))
    module = fabric.setup_module(model)
    return module, fabric.setup_optimizers(_toy.make_optimizer(module.parameters()))


def _outputs(fabric: Fabric, model: Any, plan: Plan) -> torch.Tensor:
    with torch.no_grad():
        return model(_toy.eval_batch(plan.seed).to(fabric.device)).detach().float().cpu()


def _reference_outputs(model: nn.Module, plan: Plan, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return model.to("cpu", dtype)(_toy.eval_batch(plan.seed).to(dtype)).float()


def _loss(model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    output = model(x)
    return nn.functional.mse_loss(output, y.to(output.device, output.dtype))


def check_setup(fabric: Fabric, plan: Plan) -> None:
    """``fabric.setup`` wraps model and optimizer, places the model, and keeps its outputs and keys."""
    expect = Expect()
    model = _toy.make_model(plan.seed)
    reference = copy.deepcopy(model)
    wrapped, optimizer = _set_up(fabric, plan, model)
    outputs = _outputs(fabric, wrapped, plan)
    keys = set(fabric.strategy.get_module_state_dict(unwrap(wrapped)))
    expect.true(
        isinstance(wrapped, FabricModule), f"setup returned {type(wrapped).__name__}, not a FabricModule"
    )
    expect.true(
        isinstance(optimizer, FabricOptimizer),
        f"setup returned {type(optimizer).__name__}, not a FabricOptimizer",
    )
    devices = {p.device.type for p in wrapped.parameters()}
    expect.true(
        devices <= {fabric.device.type},
        f"parameters are on {sorted(devices)}, but fabric.device is {fabric.device}",
    )
    count = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    expect.true(count > 0, "the set-up optimizer holds no parameters")
    expected = _reference_outputs(reference, plan, _toy.reference_dtype(plan.precision))
    expect.close(outputs, expected, plan.tolerance, "outputs of the set-up model vs the plain model")
    wanted = set(reference.state_dict())
    expect.true(
        keys == wanted,
        f"strategy.get_module_state_dict() has keys {sorted(keys)}, expected the plain model's {sorted(wanted)}",
    )
    expect.raise_if_failed()


def check_training(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """Backward and optimizer steps match one process training on the global batch."""
    expect = Expect()
    sampler = fabric.strategy.distributed_sampler_kwargs
    replicas = sampler["num_replicas"] if sampler and fabric.world_size > 1 else 1
    global_batch = _toy.PER_RANK_BATCH * replicas
    x, y = _toy.regression_data(TRAINING_STEPS * global_batch, plan.seed)
    model = _toy.make_model(plan.seed)
    initial = copy.deepcopy(model)
    wrapped, optimizer = _set_up(fabric, plan, model)
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=_toy.PER_RANK_BATCH))
    steps = 0
    for xb, yb in loader:
        fabric.backward(_loss(wrapped, xb, yb), model=wrapped)
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
    outputs = _outputs(fabric, wrapped, plan)
    dtype = _toy.reference_dtype(plan.precision)
    reference = _toy.reference_training(initial, x, y, global_batch, dtype)
    expected = _reference_outputs(reference, plan, dtype)
    untrained = _reference_outputs(initial, plan, dtype)
    expect.true(steps == TRAINING_STEPS, f"the set-up loader gave {steps} batches, expected {TRAINING_STEPS}")
    expect.close(
        outputs,
        expected,
        plan.tolerance,
        f"outputs after {TRAINING_STEPS} steps vs one process on batches of {global_batch}",
    )
    moved = not torch.allclose(outputs, untrained, rtol=plan.tolerance, atol=plan.tolerance)
    expect.true(moved, "the optimizer steps did not change the model")
    expect.raise_if_failed()
    return {"replicas": replicas}


def check_no_backward_sync(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """Gradient accumulation over ``no_backward_sync`` steps like one process on the summed gradients.

    A backward inside the block and one after it, then a step, must equal one step on the
    average over ranks of each rank's summed gradients (whether or not the strategy skips
    communication). Where it does (``supports_no_backward_sync``) and gradients are plain
    tensors, the gradients inside the block must be this rank's own.
    """
    expect = Expect()
    rank, dtype = fabric.global_rank, _toy.reference_dtype(plan.precision)
    model = _toy.make_model(plan.seed)
    plain = copy.deepcopy(model).to(dtype)
    wrapped, optimizer = _set_up(fabric, plan, model)
    (x1, y1), (x2, y2) = _toy.micro_batch(plan.seed, rank, 0), _toy.micro_batch(plan.seed, rank, 1)
    with fabric.no_backward_sync(wrapped):
        fabric.backward(_loss(wrapped, x1.to(fabric.device), y1), model=wrapped)
    inside = _toy.plain_grads(unwrap(wrapped))
    fabric.backward(_loss(wrapped, x2.to(fabric.device), y2), model=wrapped)
    optimizer.step()
    optimizer.zero_grad()
    outputs = _outputs(fabric, wrapped, plan)
    sums = [_local_gradients(plain, plan.seed, r, (0, 1)) for r in range(plan.world_size)]
    expected = _outputs_after_step(plain, torch.stack(sums).mean(0), plan, dtype)
    expect.close(
        outputs,
        expected,
        plan.tolerance,
        "outputs after a backward inside no_backward_sync, one after it and a step, vs one step on the "
        "average over ranks of each rank's summed gradients",
    )
    observations: dict[str, Any] = {}
    if plan.supports_no_backward_sync and inside is not None:
        own = _local_gradients(plain, plan.seed, rank, (0,))
        expect.close(inside, own, plan.tolerance, "gradients inside no_backward_sync (this rank's own)")
        observations["inside_norm"] = float(inside.norm())
    expect.raise_if_failed()
    return observations


def _local_gradients(model: nn.Module, seed: int, rank: int, indices: tuple[int, ...]) -> torch.Tensor:
    model.zero_grad()
    for index in indices:
        x, y = _toy.micro_batch(seed, rank, index)
        _loss(model, x.to(next(model.parameters()).dtype), y).backward()
    grads = _toy.plain_grads(model)
    assert grads is not None
    return grads


def _outputs_after_step(
    model: nn.Module, gradient: torch.Tensor, plan: Plan, dtype: torch.dtype
) -> torch.Tensor:
    reference = copy.deepcopy(model)
    offset = 0
    for parameter in reference.parameters():
        count = parameter.numel()
        parameter.grad = gradient[offset : offset + count].view_as(parameter).to(parameter.dtype)
        offset += count
    _toy.make_optimizer(reference.parameters()).step()
    return _reference_outputs(reference, plan, dtype)


def verify_no_backward_sync(observations: dict[int, dict[str, Any]], plan: Plan) -> list[str]:
    """Across ranks: gradients inside the block differ (each rank had its own data)."""
    norms = [obs["inside_norm"] for obs in observations.values() if "inside_norm" in obs]
    if len(norms) > 1 and len(set(norms)) == 1:
        return ["gradients inside no_backward_sync were equal on every rank: they were synchronised"]
    return []


def check_checkpoint(fabric: Fabric, plan: Plan) -> None:
    """``fabric.save`` then ``fabric.load`` restores parameters, optimizer state and user state."""
    expect = Expect()
    rank = fabric.global_rank
    path = os.path.join(plan.results_dir, "checkpoint")
    wrapped, optimizer = _set_up(fabric, plan, _toy.make_model(plan.seed))

    def step(index: int) -> None:
        x, y = _toy.micro_batch(plan.seed, rank, index)
        fabric.backward(_loss(wrapped, x.to(fabric.device), y), model=wrapped)
        optimizer.step()
        optimizer.zero_grad()

    step(0)
    step(1)
    saved_tensor = torch.arange(3.0)
    user = {"epoch": 3, "tensor": saved_tensor}
    fabric.save(path, {"model": wrapped, "optimizer": optimizer, "step": 2, "user": user, "extra": "kept"})
    saved_outputs = _outputs(fabric, wrapped, plan)
    saved_optimizer = _tensors(optimizer.state_dict())
    step(2)
    continued = _outputs(fabric, wrapped, plan)
    state: dict[str, Any] = {
        "model": wrapped,
        "optimizer": optimizer,
        "step": -1,
        "user": {"epoch": -1, "tensor": torch.zeros(3)},
    }
    remainder = fabric.load(path, state)
    loaded_outputs = _outputs(fabric, wrapped, plan)
    loaded_optimizer = _tensors(optimizer.state_dict())
    step(2)
    resumed = _outputs(fabric, wrapped, plan)

    expect.true(state["step"] == 2, f"the plain value 'step' was restored as {state['step']!r}, expected 2")
    restored_user = state["user"]
    same_user = (
        isinstance(restored_user, dict)
        and restored_user.get("epoch") == 3
        and torch.equal(torch.as_tensor(restored_user.get("tensor")).cpu(), saved_tensor)
    )
    expect.true(same_user, f"the user state was restored as {restored_user!r}, expected {user!r}")
    expect.true(
        set(remainder) == {"extra"} and remainder.get("extra") == "kept",
        f"fabric.load returned {remainder!r} as the entries it did not restore, expected {{'extra': 'kept'}}",
    )
    expect.close(loaded_outputs, saved_outputs, plan.tolerance, "model outputs after load vs at save")
    expect.true(
        list(loaded_optimizer) == list(saved_optimizer),
        f"the optimizer state after load has entries {list(loaded_optimizer)}, at save {list(saved_optimizer)}",
    )
    for key in set(saved_optimizer) & set(loaded_optimizer):
        expect.close(loaded_optimizer[key], saved_optimizer[key], plan.tolerance, f"optimizer state {key}")
    expect.close(resumed, continued, plan.tolerance, "one step after load vs one step after save")
    expect.raise_if_failed()


def _tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state dict, by its path (e.g. ``state.0.momentum_buffer``)."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        found[prefix] = local_tensor(state).detach().float().cpu().clone()
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            found.update(_tensors(state[key], f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(state, (list, tuple)):
        for index, item in enumerate(state):
            found.update(_tensors(item, f"{prefix}.{index}" if prefix else str(index)))
    return found


def check_teardown(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """``fabric.strategy.teardown()`` destroys the process group the strategy formed."""
    expect = Expect()
    had_group = dist.is_available() and dist.is_initialized()
    fabric.strategy.teardown()
    still = dist.is_available() and dist.is_initialized()
    expect.true(
        not still,
        "torch.distributed still has a default process group after fabric.strategy.teardown(); "
        "call torch.distributed.destroy_process_group() in the strategy's teardown() for a group it formed",
    )
    expect.raise_if_failed()
    return {"had_process_group": had_group}
