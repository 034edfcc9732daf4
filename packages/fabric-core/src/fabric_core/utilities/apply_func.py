"""Apply a function to every tensor inside nested lists, tuples, dicts and dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["apply_to_tensors", "convert_floating_tensors", "move_to_device"]


def apply_to_tensors(data: Any, function: Callable[[torch.Tensor], Any]) -> Any:
    """Return a copy of ``data`` with ``function`` applied to each tensor in it.

    Dicts, lists, tuples, named tuples and dataclass instances are rebuilt with the same
    type; everything else is returned unchanged.
    """
    if isinstance(data, torch.Tensor):
        return function(data)
    if isinstance(data, Mapping):
        return type(data)({key: apply_to_tensors(value, function) for key, value in data.items()})  # type: ignore[call-arg]
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(apply_to_tensors(value, function) for value in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_tensors(value, function) for value in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), function)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def move_to_device(data: Any, device: torch.device | str) -> Any:
    """Move every tensor in ``data`` to ``device`` (non-blocking for CUDA targets)."""
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    return apply_to_tensors(data, lambda t: t.to(device, non_blocking=non_blocking))


def convert_floating_tensors(data: Any, dtype: torch.dtype) -> Any:
    """Cast every floating-point tensor in ``data`` to ``dtype``; other tensors are kept."""
    return apply_to_tensors(data, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)
