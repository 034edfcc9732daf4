"""Checks of set-up, training, gradient accumulation, checkpoints and teardown.

Each check builds the same toy model on every rank (same seed) and observes what a
training loop observes: the model's outputs on a fixed batch and the losses of its steps.
Nothing reads ``param.grad``, optimizer state or parameter shards, so replicated, sharded
(DTensor, ZeRO partitions) and engine-wrapped models are checked alike.

Under ``update="global_batch"`` the numbers are compared with plain PyTorch in one
process training on the global batch (every data-parallel rank's batch together); under
``update="own"`` every rank gets the same batches and the replicas are compared with each
other (see `verify_replicas`).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core.testing import _toy
from fabric_core.testing._expect import Expect
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
    "verify_checkpoint",
    "verify_replicas",
]

TRAINING_STEPS = 4
ACCUMULATED_STEPS = 2
"""Optimizer steps of the ``no_backward_sync`` check."""
MICRO_BATCHES = 3
"""Micro-batches per step of the ``no_backward_sync`` check: all but the last inside the block."""
RESUMED_STEPS = 2
"""Steps taken after a save (continuing) and after the load (resuming), compared with each other."""

Batch = tuple[torch.Tensor, torch.Tensor]


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


def _data_parallel(fabric: Fabric, same_data: bool = False) -> tuple[int, int]:
    """``(this rank's data-parallel index, data-parallel replicas)``, as the strategy shards data.

    ``(0, 1)`` with ``same_data``: every rank is given the same data.
    """
    sampler = fabric.strategy.distributed_sampler_kwargs
    if same_data or not sampler or fabric.world_size == 1:
        return 0, 1
    return int(sampler.get("rank", fabric.global_rank)), int(sampler["num_replicas"])


def _global_micro_batch(seed: int, replicas: int, index: int) -> Batch:
    """Every data-parallel rank's micro-batch ``index``, in rank order."""
    parts = [_toy.micro_batch(seed, rank, index) for rank in range(replicas)]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _expect_trained(
    expect: Expect, outputs: torch.Tensor, initial: torch.Tensor, plan: Plan, what: str
) -> None:
    expect.true(bool(torch.isfinite(outputs).all()), f"the model's outputs after {what} are not finite")
    moved = not torch.allclose(outputs, initial, rtol=plan.tolerance, atol=plan.tolerance)
    expect.true(moved, f"{what} did not change the model")


def _expect_losses(expect: Expect, losses: list[float], expected: list[float], plan: Plan, what: str) -> None:
    if len(losses) != len(expected):
        expect.true(False, f"{what}: {len(losses)} losses, expected {len(expected)}")
        return
    expect.close(
        torch.tensor(losses, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        plan.tolerance,
        what,
    )


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
    # What a loop and an LR scheduler read: parameter groups with a learning rate. (Their
    # "params" are the strategy's business: an engine may step flat partitions instead.)
    groups = optimizer.param_groups
    expect.true(
        bool(groups) and all("lr" in group for group in groups),
        f"the set-up optimizer's param_groups are {groups!r}, expected groups with a learning rate 'lr'",
    )
    expected = _reference_outputs(reference, plan, _toy.reference_dtype(plan.precision))
    expect.close(outputs, expected, plan.tolerance, "outputs of the set-up model vs the plain model")
    wanted = set(reference.state_dict())
    expect.true(
        keys == wanted,
        f"strategy.get_module_state_dict() has keys {sorted(keys)}, expected the plain model's {sorted(wanted)}",
    )
    expect.raise_if_failed()


def check_training(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """Backward and optimizer steps give the outputs and losses of one process on the global batch.

    Under ``update="own"`` every rank trains on the same batches (the loader is not
    sharded); the outputs after every step go to `verify_replicas`.
    """
    expect = Expect()
    own = plan.update == "own"
    _, replicas = _data_parallel(fabric, same_data=own)
    global_batch = _toy.PER_RANK_BATCH * replicas
    x, y = _toy.regression_data(TRAINING_STEPS * global_batch, plan.seed)
    model = _toy.make_model(plan.seed)
    initial = copy.deepcopy(model)
    wrapped, optimizer = _set_up(fabric, plan, model)
    loader = fabric.setup_dataloaders(
        DataLoader(TensorDataset(x, y), batch_size=_toy.PER_RANK_BATCH), use_distributed_sampler=not own
    )
    losses: list[float] = []
    batches: list[Batch] = []
    trajectory: list[list[float]] = []
    for xb, yb in loader:
        loss = _loss(wrapped, xb, yb)
        fabric.backward(loss, model=wrapped)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        batches.append((xb.detach().cpu(), yb.detach().cpu()))
        if own:
            trajectory.append(_outputs(fabric, wrapped, plan).reshape(-1).tolist())
    outputs = _outputs(fabric, wrapped, plan)
    dtype = _toy.reference_dtype(plan.precision)
    expect.true(
        len(losses) == TRAINING_STEPS,
        f"the set-up loader gave {len(losses)} batches, expected {TRAINING_STEPS}",
    )
    if not own:
        steps = [[(x[i : i + global_batch], y[i : i + global_batch])] for i in range(0, len(x), global_batch)]
        probes = [[batch] for batch in batches[: len(steps)]]
        reference, expected_losses = _toy.reference_training(initial, steps[: len(probes)], dtype, probes)
        expect.close(
            outputs,
            _reference_outputs(reference, plan, dtype),
            plan.tolerance,
            f"outputs after {TRAINING_STEPS} steps vs one process on batches of {global_batch}",
        )
        _expect_losses(expect, losses, expected_losses, plan, "the losses of the steps vs one process")
    _expect_trained(expect, outputs, _reference_outputs(initial, plan, dtype), plan, "the optimizer steps")
    expect.raise_if_failed()
    return {"replicas": replicas, "outputs": trajectory}


def check_no_backward_sync(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """Gradient accumulation with ``no_backward_sync`` gives the update of one process on the global batch.

    Each of `ACCUMULATED_STEPS` steps runs `MICRO_BATCHES` forward and
    backward passes, all but the last inside ``fabric.no_backward_sync(model)``, then one
    optimizer step: the loop Lightning users write. The outputs and every micro-batch's
    loss must equal one process that adds up the gradients of the global micro-batches
    (whether the strategy skips the communication or not: skipping it is not visible in
    the numbers). With ``supports_no_backward_sync`` the block must not warn on entry
    (a strategy that cannot skip says so once, with a warning). Under ``update="own"``
    every rank accumulates the same micro-batches and `verify_replicas` compares them.
    """
    expect = Expect()
    own = plan.update == "own"
    rank, replicas = _data_parallel(fabric, same_data=own)
    dtype = _toy.reference_dtype(plan.precision)
    model = _toy.make_model(plan.seed)
    initial = copy.deepcopy(model)
    wrapped, optimizer = _set_up(fabric, plan, model)
    losses: list[float] = []
    trajectory: list[list[float]] = []
    caught: list[warnings.WarningMessage] = []
    for step in range(ACCUMULATED_STEPS):
        for micro in range(MICRO_BATCHES):
            x, y = _toy.micro_batch(plan.seed, rank, step * MICRO_BATCHES + micro)
            with ExitStack() as stack:
                with warnings.catch_warnings(record=True) as records:
                    warnings.simplefilter("always")
                    stack.enter_context(fabric.no_backward_sync(wrapped, enabled=micro < MICRO_BATCHES - 1))
                caught += records
                loss = _loss(wrapped, x.to(fabric.device), y)
                fabric.backward(loss, model=wrapped)
            losses.append(loss.item())
        optimizer.step()
        optimizer.zero_grad()
        if own:
            trajectory.append(_outputs(fabric, wrapped, plan).reshape(-1).tolist())
    outputs = _outputs(fabric, wrapped, plan)
    if not own:
        indices = [
            [step * MICRO_BATCHES + micro for micro in range(MICRO_BATCHES)]
            for step in range(ACCUMULATED_STEPS)
        ]
        steps = [[_global_micro_batch(plan.seed, replicas, i) for i in step] for step in indices]
        probes = [[_toy.micro_batch(plan.seed, rank, i) for i in step] for step in indices]
        reference, expected_losses = _toy.reference_training(initial, steps, dtype, probes)
        expect.close(
            outputs,
            _reference_outputs(reference, plan, dtype),
            plan.tolerance,
            f"outputs after {ACCUMULATED_STEPS} steps of {MICRO_BATCHES} micro-batches ({MICRO_BATCHES - 1} inside "
            "no_backward_sync) vs one process adding up the gradients of the global micro-batches",
        )
        _expect_losses(
            expect, losses, expected_losses, plan, "the losses of the micro-batches vs one process"
        )
    _expect_trained(expect, outputs, _reference_outputs(initial, plan, dtype), plan, "the accumulated steps")
    warned = [str(record.message) for record in caught if issubclass(record.category, UserWarning)]
    if plan.supports_no_backward_sync and warned:
        expect.true(
            False,
            f"entering fabric.no_backward_sync() warned {warned[0]!r} although supports_no_backward_sync=True: "
            "pass supports_no_backward_sync=False for a strategy that cannot skip the synchronisation",
        )
    expect.raise_if_failed()
    return {"outputs": trajectory}


def verify_replicas(observations: dict[int, dict[str, Any]], plan: Plan) -> list[str]:
    """Under ``update="own"``: after every step, every rank's model gives rank 0's outputs.

    The ranks trained on the same batches, so whatever the strategy's own update is, its
    replicas must agree (to ``tolerance``). Nothing to compare under ``"global_batch"``.
    """
    if plan.update != "own":
        return []
    first = observations.get(0, {}).get("outputs", [])
    for rank, observation in sorted(observations.items()):
        for step, (mine, theirs) in enumerate(zip(observation.get("outputs", []), first)):
            difference = _disagreement(mine, theirs, plan.tolerance)
            if difference is not None:
                return [
                    f"after step {step + 1}, rank {rank}'s model gives outputs up to {difference:.3g} away from "
                    f"rank 0's (tolerance {plan.tolerance:g}) although every rank trained on the same batches: "
                    "the replicas disagree"
                ]
    return []


def _disagreement(values: list[float], expected: list[float], tolerance: float) -> float | None:
    """The largest difference when ``values`` is not ``expected`` within ``tolerance`` (as ``allclose``), else ``None``."""
    pairs = list(zip(values, expected))
    close = len(values) == len(expected) and all(
        math.isfinite(a) and abs(a - b) <= tolerance * (1 + abs(b)) for a, b in pairs
    )
    return None if close else max((abs(a - b) for a, b in pairs), default=math.inf)


def check_checkpoint(fabric: Fabric, plan: Plan) -> dict[str, Any]:
    """``fabric.save``, then ``fabric.load`` into a new model and optimizer, resumes training exactly.

    After two steps the state is saved and training continues for `RESUMED_STEPS`
    steps. A model and optimizer set up afresh (from other initial weights) then load the
    checkpoint: their outputs must be those at the save, and the same steps must give
    the continued run's losses and outputs (which needs the optimizer's momentum). Plain
    values come back, and entries not asked for are returned. The loaded model is one
    model on every rank (see `verify_checkpoint`).
    """
    expect = Expect()
    rank, _ = _data_parallel(fabric)  # each replica its own data, under any update
    path = os.path.join(plan.results_dir, "checkpoint")

    def step(model: Any, optimizer: Any, index: int) -> float:
        x, y = _toy.micro_batch(plan.seed, rank, index)
        loss = _loss(model, x.to(fabric.device), y)
        fabric.backward(loss, model=model)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    wrapped, optimizer = _set_up(fabric, plan, _toy.make_model(plan.seed))
    step(wrapped, optimizer, 0)
    step(wrapped, optimizer, 1)
    saved_tensor = torch.arange(3.0)
    user = {"epoch": 3, "tensor": saved_tensor}
    fabric.save(path, {"model": wrapped, "optimizer": optimizer, "step": 2, "user": user, "extra": "kept"})
    saved = _outputs(fabric, wrapped, plan)
    continued_losses = [step(wrapped, optimizer, 2 + i) for i in range(RESUMED_STEPS)]
    continued = _outputs(fabric, wrapped, plan)

    fresh, fresh_optimizer = _set_up(fabric, plan, _toy.make_model(plan.seed + 1))
    before_load = _outputs(fabric, fresh, plan)
    state: dict[str, Any] = {
        "model": fresh,
        "optimizer": fresh_optimizer,
        "step": -1,
        "user": {"epoch": -1, "tensor": torch.zeros(3)},
    }
    remainder = fabric.load(path, state)
    loaded = _outputs(fabric, fresh, plan)
    resumed_losses = [step(fresh, fresh_optimizer, 2 + i) for i in range(RESUMED_STEPS)]
    resumed = _outputs(fabric, fresh, plan)

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
    expect.true(
        not torch.allclose(before_load, saved, rtol=plan.tolerance, atol=plan.tolerance),
        "the new model gave the saved model's outputs before loading (the check needs other weights)",
    )
    expect.close(loaded, saved, plan.tolerance, "outputs of a new model after fabric.load vs at the save")
    _expect_losses(
        expect,
        resumed_losses,
        continued_losses,
        plan,
        f"the losses of {RESUMED_STEPS} steps after the load vs after the save",
    )
    expect.close(
        resumed,
        continued,
        plan.tolerance,
        f"outputs {RESUMED_STEPS} steps after the load vs {RESUMED_STEPS} steps after the save (optimizer state)",
    )
    expect.raise_if_failed()
    return {"loaded": loaded.reshape(-1).tolist()}


def verify_checkpoint(observations: dict[int, dict[str, Any]], plan: Plan) -> list[str]:
    """Across ranks: a loaded checkpoint is one model, giving the same outputs on every rank."""
    first = observations.get(0, {}).get("loaded")
    if first is None:
        return []
    for rank, observation in sorted(observations.items()):
        difference = _disagreement(observation.get("loaded", first), first, plan.tolerance)
        if difference is not None:
            return [
                f"after fabric.load, rank {rank}'s model gives outputs up to {difference:.3g} away from rank 0's: "
                "the ranks loaded different models from one checkpoint"
            ]
    return []


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
