"""Turning a ``{name: object}`` state into a checkpoint dict and back."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["apply_checkpoint", "check_entries", "collect_state"]


def collect_state(
    state: dict[str, Any],
    strategy: Strategy | None = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
    *,
    module_state: Callable[[nn.Module], dict[str, Any]] | None = None,
    optimizer_state: Callable[[Optimizer], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Replace each module, optimizer and stateful object in ``state`` by its state dict.

    Modules and optimizers go through ``module_state``/``optimizer_state`` when given (a
    sharded strategy gathers or names its shards there), else through the strategy's
    ``get_module_state_dict``/``get_optimizer_state``.

    Raises:
        TypeError: ``state`` is not a dict, or ``filter`` names an entry that has no state dict.
    """
    if module_state is None or optimizer_state is None:
        assert strategy is not None, "collect_state needs a strategy or both state getters"
        module_state = module_state or strategy.get_module_state_dict
        optimizer_state = optimizer_state or strategy.get_optimizer_state
    if not isinstance(state, dict):
        raise TypeError(
            f"The state to save must be a dict of names to objects, got {type(state).__name__}. "
            "Example: fabric.save(path, {'model': model, 'optimizer': optimizer, 'step': step})."
        )
    checkpoint: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            value = module_state(obj)
        elif isinstance(obj, Optimizer):
            value = optimizer_state(obj)
        elif callable(getattr(obj, "state_dict", None)):
            value = obj.state_dict()
        else:
            value = obj
        if filter is not None and key in filter:
            if not isinstance(value, dict):
                raise TypeError(
                    f"filter['{key}'] was given, but state['{key}'] is not a dict or a state dict."
                )
            keep = filter[key]
            value = {name: entry for name, entry in value.items() if keep(name, entry)}
        checkpoint[key] = value
    return checkpoint


def apply_checkpoint(
    state: dict[str, Any] | nn.Module | Optimizer | None,
    checkpoint: dict[str, Any],
    strategy: Strategy | None = None,
    strict: bool = True,
    *,
    path: str | os.PathLike[str] | None = None,
    load_module: Callable[[nn.Module, Any, bool], None] | None = None,
    load_optimizer: Callable[[Optimizer, Any], None] | None = None,
) -> dict[str, Any]:
    """Restore the objects in ``state`` from ``checkpoint`` in place: the inverse of :func:`collect_state`.

    Modules and optimizers load their entry through ``load_module(module, value, strict)``
    / ``load_optimizer(optimizer, value)`` when given (a sharded strategy scatters or
    reshards there), else through the strategy's ``load_module_state_dict`` /
    ``load_optimizer_state``. Other objects with ``load_state_dict`` load their entry; any
    other entry replaces the value in ``state``.

    Args:
        state: Names mapped to the objects to restore; or one module or optimizer, for which
            the whole checkpoint is its state dict; or ``None``, which restores nothing.
        checkpoint: The loaded checkpoint.
        strategy: Gives the loaders not passed as hooks.
        strict: Require every name in ``state`` to be in the checkpoint (see
            :func:`check_entries`); passed on to ``load_module``.
        path: Where the checkpoint was read from, named in the error.
        load_module: Loads a module's entry, with ``strict``.
        load_optimizer: Loads an optimizer's entry.

    Returns:
        The checkpoint entries that ``state`` did not ask for (all of them for ``state=None``,
        none for a single module or optimizer).

    Raises:
        KeyError: ``strict`` is true and ``state`` names an entry the checkpoint lacks.
    """
    if state is None:
        return checkpoint
    if load_module is None or load_optimizer is None:
        assert strategy is not None, "apply_checkpoint needs a strategy or both state loaders"
        load_module = load_module or strategy.load_module_state_dict
        load_optimizer = load_optimizer or strategy.load_optimizer_state
    if isinstance(state, dict):
        named, entries = state, checkpoint
    else:  # one module or optimizer: the whole checkpoint is its state dict
        named, entries = {"_": state}, {"_": checkpoint}
    check_entries(named, entries, strict, path)
    remaining = dict(entries)
    for key, obj in named.items():
        if key not in remaining:
            continue
        value = remaining.pop(key)
        if isinstance(obj, nn.Module):
            load_module(obj, value, strict)
        elif isinstance(obj, Optimizer):
            load_optimizer(obj, value)
        elif callable(getattr(obj, "load_state_dict", None)):
            obj.load_state_dict(value)
        else:
            named[key] = value
    return remaining if named is state else {}


def check_entries(
    state: Iterable[str], saved: Iterable[str], strict: bool, path: str | os.PathLike[str] | None = None
) -> None:
    """Raise when ``strict`` and ``state`` names entries that the checkpoint does not hold.

    Args:
        state: The names to restore.
        saved: The names the checkpoint holds (its top-level keys).
        strict: Whether a missing name is an error.
        path: Where the checkpoint was read from, named in the error.

    Raises:
        KeyError: Naming the missing entries and those the checkpoint holds.
    """
    if not strict:
        return
    saved = list(saved)
    missing = [key for key in state if key not in saved]
    if missing:
        where = f" '{os.fspath(path)}'" if path is not None else ""
        raise KeyError(
            f"The checkpoint{where} has no entry {', '.join(map(repr, missing))} (it holds: "
            f"{', '.join(map(repr, saved)) or 'nothing'}). Pass strict=False to load the entries that exist."
        )
