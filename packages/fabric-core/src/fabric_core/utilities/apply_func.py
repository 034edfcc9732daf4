"""Apply a function to every tensor inside nested lists, tuples, dicts and dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = [
    "apply_to_tensors",
    "as_tensor",
    "convert_floating_tensors",
    "convert_to_tensors",
    "move_data_to_device",
    "move_to_device",
]


def apply_to_tensors(data: Any, function: Callable[[torch.Tensor], Any]) -> Any:
    """Return a copy of ``data`` with ``function`` applied to each tensor in it.

    Dicts, lists, tuples, named tuples and dataclass instances are rebuilt with the same
    type; everything else is returned unchanged.
    """
    return _apply(data, lambda value: isinstance(value, torch.Tensor), function)


def _apply(data: Any, is_leaf: Callable[[Any], bool], function: Callable[[Any], Any]) -> Any:
    if is_leaf(data):
        return function(data)
    if isinstance(data, Mapping):
        return type(data)({key: _apply(value, is_leaf, function) for key, value in data.items()})  # type: ignore[call-arg]
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_apply(value, is_leaf, function) for value in data))
    if isinstance(data, (list, tuple)):
        return type(data)(_apply(value, is_leaf, function) for value in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: _apply(getattr(data, f.name), is_leaf, function)
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


def as_tensor(value: Any, device: torch.device | str | None = None) -> Any:
    """``value`` as a tensor when it is a Python or NumPy number (or array); tensors and others are kept.

    Collectives communicate tensors: a loss turned into a float with ``.item()`` must not
    be returned unreduced just because it is a number.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)) or _is_numpy_value(value):
        return torch.as_tensor(value, device=device)
    return value


def convert_to_tensors(data: Any, device: torch.device | str | None = None) -> Any:
    """Turn every number in nested collections into a tensor, and move every tensor to ``device``."""

    def is_leaf(value: Any) -> bool:
        return isinstance(value, (torch.Tensor, int, float)) or _is_numpy_value(value)

    def convert(value: Any) -> torch.Tensor:
        tensor = as_tensor(value, device)
        return tensor.to(device) if device is not None else tensor

    return _apply(data, is_leaf, convert)


def move_data_to_device(batch: Any, device: torch.device | str | int) -> Any:
    """Move every tensor in ``batch`` to ``device`` (Lightning's name for `move_to_device`)."""
    return move_to_device(batch, torch.device(device) if isinstance(device, int) else device)


def _is_numpy_value(value: Any) -> bool:
    module = type(value).__module__
    return module == "numpy" and hasattr(value, "dtype")
