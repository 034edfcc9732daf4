"""The ``64-true`` precision plugin."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from fabric_core.precision.dtype_context import default_dtype
from fabric_core.precision.precision import Precision
from fabric_core.utilities.apply_func import convert_floating_tensors


class DoublePrecision(Precision):
    """float64 weights, inputs and compute; float outputs are returned as float32."""

    precision = "64-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module to float64."""
        return module.double()

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """Create float tensors as float64."""
        return default_dtype(torch.float64)

    def forward_context(self) -> AbstractContextManager[Any]:
        """Tensors created during forward are float64."""
        return default_dtype(torch.float64)

    def convert_input(self, data: Any) -> Any:
        """Cast floating inputs to float64."""
        return convert_floating_tensors(data, torch.float64)

    def convert_output(self, data: Any) -> Any:
        """Cast floating outputs back to the default dtype."""
        return convert_floating_tensors(data, torch.get_default_dtype())
