"""Casting a forward pass's inputs and outputs, with fast paths for the common shapes.

`cast_floating` returns what `fabric_core.utilities.apply_func.convert_floating_tensors`
returns. A plain tensor, and the tuple of arguments and dict of keyword arguments that
`FabricModule` passes, are handled here without the general traversal; a cast to one of
torch's four float dtypes uses the tensor's own method (``.float()``, ``.bfloat16()``,
...), which does what ``.to(dtype)`` does at about half the cost. Everything else (tensor
subclasses, lists, named tuples, dataclasses, ...) goes through the general function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fabric_core.utilities.apply_func import convert_floating_tensors

_Tensor = torch.Tensor
_METHODS: dict[torch.dtype, Callable[[torch.Tensor], torch.Tensor]] = {
    torch.float32: torch.Tensor.float,
    torch.float64: torch.Tensor.double,
    torch.float16: torch.Tensor.half,
    torch.bfloat16: torch.Tensor.bfloat16,
}


def cast_floating(data: Any, dtype: torch.dtype) -> Any:
    """Cast every floating-point tensor in ``data`` to ``dtype``; other tensors and values are kept."""
    kind = type(data)
    if kind is _Tensor:
        if not data.is_floating_point() or data.dtype is dtype:
            return data
        method = _METHODS.get(dtype)
        return data.to(dtype) if method is None else method(data)
    if kind is tuple:
        return tuple([cast_floating(value, dtype) for value in data])
    if kind is dict:
        return {key: cast_floating(value, dtype) for key, value in data.items()}
    return convert_floating_tensors(data, dtype)
