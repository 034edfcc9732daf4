"""Re-pointing an optimizer at the parameters that replaced the ones it was built over."""

from __future__ import annotations

import gc

import torch
from torch import nn

from fabric_core.utilities.optimizer import ParameterSlots, repoint_optimizer


def replace_parameters(module: nn.Module, device: str = "cpu") -> None:
    """Register a new ``Parameter`` object in every slot, as a move to XLA or sharding does."""
    for owner in module.modules():
        for name, parameter in list(owner._parameters.items()):
            if parameter is not None:
                setattr(owner, name, nn.Parameter(parameter.detach().to(device, copy=True)))


def test_an_optimizer_built_before_the_replacement_steps_the_new_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[1].parameters()}], lr=0.1
    )
    group_lists = [group["params"] for group in optimizer.param_groups]
    slots = ParameterSlots(model)
    replace_parameters(model)

    assert repoint_optimizer(optimizer, slots.replacements()) == 4

    assert [group["params"] for group in optimizer.param_groups] == group_lists  # the same lists, edited
    assert all(a is b for a, b in zip(group_lists[0] + group_lists[1], model.parameters(), strict=True))
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_existing_state_moves_to_the_new_parameter_and_its_device() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    old_weight = model.weight
    slots = ParameterSlots(model)
    replace_parameters(model, device="meta")

    repoint_optimizer(optimizer, slots.replacements())

    assert old_weight not in optimizer.state
    state = optimizer.state[model.weight]
    assert state["exp_avg"].is_meta and state["exp_avg_sq"].is_meta
    assert not state["step"].is_meta  # a scalar stays where the optimizer keeps it


def test_untouched_parameters_stay_and_the_replacements_hold_old_parameters_weakly() -> None:
    kept, replaced = nn.Linear(1, 1), nn.Linear(1, 1)
    optimizer = torch.optim.SGD([*kept.parameters(), *replaced.parameters()], lr=0.1)
    slots = ParameterSlots(replaced)
    replace_parameters(replaced)
    replacements = slots.replacements()

    assert len(replacements) == 2  # the optimizer still holds the old parameters

    assert repoint_optimizer(optimizer, replacements) == 2
    assert optimizer.param_groups[0]["params"] == [*kept.parameters(), *replaced.parameters()]
    gc.collect()  # nothing holds the old parameters now: their entries go
    assert len(replacements) == 0
    assert ParameterSlots(kept).replacements() == {}  # no slot changed
