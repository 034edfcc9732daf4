"""The ``16-true`` and ``bf16-true`` precision plugins."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from fabric_core.precision.dtype_context import default_dtype
from fabric_core.precision.precision import Precision
from fabric_core.utilities.apply_func import convert_floating_tensors

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class HalfPrecision(Precision):
    """Weights, inputs and compute in float16 or bfloat16, with no float32 master copy.

    Halves parameter memory; optimizer updates happen in the same low precision, so
    prefer a mixed precision for long training. Float outputs are returned as float32.

    Args:
        dtype: ``"float16"`` (``16-true``) or ``"bfloat16"`` (``bf16-true``).
        device_type: The device type the computation runs on.
    """

    def __init__(self, dtype: str = "bfloat16", device_type: str = "cpu") -> None:
        super().__init__(device_type)
        if dtype not in _DTYPES:
            raise ValueError(f"HalfPrecision(dtype={dtype!r}) is not supported; use 'float16' or 'bfloat16'.")
        self.dtype = _DTYPES[dtype]
        self.precision = "16-true" if dtype == "float16" else "bf16-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's floating-point weights and buffers to the half dtype."""
        return module.to(dtype=self.dtype)

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """Create float tensors in the half dtype."""
        return default_dtype(self.dtype)

    def forward_context(self) -> AbstractContextManager[Any]:
        """Tensors created during forward are in the half dtype."""
        return default_dtype(self.dtype)

    def convert_input(self, data: Any) -> Any:
        """Cast floating inputs to the half dtype."""
        return convert_floating_tensors(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        """Cast floating outputs back to the default dtype."""
        return convert_floating_tensors(data, torch.get_default_dtype())
