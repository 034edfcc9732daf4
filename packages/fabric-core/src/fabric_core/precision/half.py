"""The ``16-true`` and ``bf16-true`` precision plugins."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from fabric_core.precision._cast import cast_floating
from fabric_core.precision.dtype_context import default_dtype
from fabric_core.precision.precision import Precision

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_NAMES = {"16-true": "float16", "bf16-true": "bfloat16", "float16": "float16", "bfloat16": "bfloat16"}


class HalfPrecision(Precision):
    """Weights, inputs and compute in float16 or bfloat16, with no float32 master copy.

    Halves parameter memory; optimizer updates happen in the same low precision, so
    prefer a mixed precision for long training. Float outputs are returned as float32.

    Constructible as in Lightning Fabric: ``HalfPrecision("bf16-true")``.

    Args:
        precision: ``"16-true"`` or ``"bf16-true"`` (or the dtype names ``"float16"``,
            ``"bfloat16"``).
        device_type: The device type the computation runs on.
        dtype: Another name for ``precision`` (keyword only).

    Raises:
        ValueError: The precision is not a half one.
    """

    def __init__(
        self, precision: str = "16-true", device_type: str = "cpu", *, dtype: str | None = None
    ) -> None:
        super().__init__(device_type)
        name = _NAMES.get(dtype if dtype is not None else precision)
        if name is None:
            raise ValueError(
                f"HalfPrecision({dtype or precision!r}) is not supported; use '16-true' or 'bf16-true'."
            )
        self.dtype = _DTYPES[name]
        self.precision = "16-true" if name == "float16" else "bf16-true"

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
        return cast_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        """Cast floating outputs back to the default dtype."""
        return cast_floating(data, torch.get_default_dtype())
