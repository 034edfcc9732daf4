"""Optimizer state keyed by parameter index or by parameter name, and the state loop that needs the model.

``Optimizer.state_dict()`` numbers parameters (``{"state": {0: ...}, "param_groups":
[{"params": [0, 1]}]}``); ``torch.distributed.checkpoint.state_dict`` names them by their
place in the model (``"0.weight"``), which survives sharding and resharding. Single files
of fabric hold the numbered form, DCP directories the named form; loading converts one
into the other through the model, so a checkpoint of either form loads into any strategy.

Getting and setting named state needs the module whose parameters the optimizer trains; a
`ModuleFinder` finds it in the state (see `module_in_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.utilities.checkpoint import apply_checkpoint
from fabric_core.utilities.checkpoint import collect_state as core_collect_state

__all__ = [
    "Filter",
    "ModuleFinder",
    "apply_state",
    "collect_state",
    "is_named",
    "module_in_state",
    "named_optimizer_state",
    "optimizer_state_to_torch",
]

ModuleFinder = Callable[[Optimizer, dict[str, Any]], nn.Module]
"""``(optimizer, state) -> the module whose parameters the optimizer trains``."""

Filter = dict[str, Callable[[str, Any], bool]]
"""For a name in the state, a predicate ``(key, value) -> bool`` keeping part of its state dict."""


def is_named(state_dict: Any) -> bool:
    """Whether an optimizer state dict keys its parameters by name (the DCP form)."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    if not isinstance(groups, list):
        return False
    return any(isinstance(param, str) for group in groups for param in group.get("params", []))


def optimizer_state_to_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Turn a name-keyed optimizer state dict into the index-keyed form of ``Optimizer.state_dict()``.

    Parameters are numbered in the order the parameter groups list them, which is how
    ``torch.optim.Optimizer`` numbers its parameters: load the result into an optimizer
    built over the same parameters in the same order (``model.parameters()``). A state
    dict that is index-keyed already is returned unchanged.

    Example::

        out = torch.load("consolidated.pt")
        model.load_state_dict(out["model"])
        optimizer = torch.optim.AdamW(model.parameters())
        optimizer.load_state_dict(optimizer_state_to_torch(out["optimizer"]))

    Raises:
        ValueError: The dict has no ``param_groups`` list.
    """
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list):
        raise ValueError(
            "This is not an optimizer state dict: it has no 'param_groups' list. Pass the optimizer entry of a "
            "checkpoint, e.g. out['optimizer']."
        )
    index: dict[Any, int] = {}
    converted_groups = []
    for group in groups:
        params = list(group["params"])
        if params and not isinstance(params[0], str):
            return state_dict
        for name in params:
            index.setdefault(name, len(index))
        converted_groups.append({**group, "params": [index[name] for name in params]})
    state = {index[name]: value for name, value in state_dict.get("state", {}).items() if name in index}
    return {"state": state, "param_groups": converted_groups}


def named_optimizer_state(
    state_dict: dict[str, Any], module: nn.Module, optimizer: Optimizer
) -> dict[str, Any]:
    """Key an index-keyed optimizer state dict by the names of this optimizer's parameters in ``module``.

    A name-keyed state dict is returned unchanged.

    Raises:
        ValueError: The state dict covers a different number of parameters than the
            optimizer trains, or the optimizer trains parameters ``module`` does not hold.
    """
    groups = state_dict.get("param_groups", [])
    if not groups or not groups[0]["params"] or is_named(state_dict):
        return state_dict
    names = {id(p): name for name, p in module.named_parameters()}
    ordered = [names.get(id(p)) for group in optimizer.param_groups for p in group["params"]]
    saved = sum(len(group["params"]) for group in groups)
    if saved != len(ordered) or None in ordered:
        raise ValueError(
            f"The checkpoint's optimizer state covers {saved} parameters, but this optimizer trains "
            f"{len(ordered)} parameters of {type(module).__name__}. Load it into an optimizer built the same way."
        )
    return {
        "state": {ordered[index]: value for index, value in state_dict.get("state", {}).items()},
        "param_groups": [{**group, "params": [ordered[i] for i in group["params"]]} for group in groups],
    }


def module_in_state(optimizer: Optimizer, state: dict[str, Any], more: Iterable[nn.Module] = ()) -> nn.Module:
    """The module in ``state`` (or in ``more``) that holds every parameter ``optimizer`` trains.

    Raises:
        TypeError: No such module (the message says to put the model into the same state).
    """
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in [obj for obj in state.values() if isinstance(obj, nn.Module)] + list(more):
        if params <= {id(p) for p in module.parameters()}:
            return module
    raise TypeError(
        f"Saving or loading {type(optimizer).__name__} by parameter names needs the model whose parameters it "
        "trains, and no model in the state (or set up by this strategy) holds all of them. Put the model in the "
        "same state: {'model': model, 'optimizer': optimizer}."
    )


def collect_state(
    state: dict[str, Any],
    filter: Filter | None,
    module_state: Callable[[nn.Module], dict[str, Any]],
    optimizer_state: Callable[[nn.Module, Optimizer], dict[str, Any]],
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Replace each module, optimizer and stateful object by its state dict (as the getters make it).

    Core's `collect_state`, with each optimizer's
    state taken together with the module it trains.
    """
    return core_collect_state(
        state,
        filter=filter,
        module_state=module_state,
        optimizer_state=lambda optimizer: optimizer_state(module_for(optimizer, state), optimizer),
    )


def apply_state(
    state: dict[str, Any] | nn.Module | Optimizer | None,
    checkpoint: dict[str, Any],
    strict: bool,
    path: Path,
    load_module: Callable[[nn.Module, Any, bool], None],
    load_optimizer: Callable[[nn.Module, Optimizer, Any], None],
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Restore ``state`` from ``checkpoint`` in place (as the setters load it); return the entries left.

    Core's `apply_checkpoint`, with each optimizer's
    state loaded together with the module it trains.
    """
    named = state if isinstance(state, dict) else {}

    def load_with_module(optimizer: Optimizer, value: Any) -> None:
        load_optimizer(module_for(optimizer, named), optimizer, value)

    return apply_checkpoint(
        state, checkpoint, strict=strict, path=path, load_module=load_module, load_optimizer=load_with_module
    )
