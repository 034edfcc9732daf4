"""The precision plugin of DeepSpeed runs: the engine casts and scales, the plugin casts at the edges."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

import torch
from torch import nn

from fabric_core.precision.dtype_context import default_dtype
from fabric_core.precision.precision import Precision
from fabric_core.utilities.apply_func import convert_floating_tensors

__all__ = ["DeepSpeedPrecision"]

_DTYPES: Final = {
    "32-true": torch.float32,
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}


class DeepSpeedPrecision(Precision):
    """Precision of a DeepSpeed run, chosen with ``Fabric(precision=...)``.

    With ``bf16`` or ``fp16`` enabled in the DeepSpeed config, the engine keeps the model's
    weights in the half dtype and a float32 master copy in the (ZeRO) optimizer, and with
    float16 it scales the loss dynamically. This plugin only casts at the edges: floating
    inputs to the half dtype before ``forward`` and floating outputs back to float32. The
    ``-true`` variants also create and convert the model in the half dtype up front.

    - ``32-true``: float32 everywhere (CPU and GPU).
    - ``bf16-mixed``, ``bf16-true``: DeepSpeed ``bf16``, bfloat16 weights and compute with
      float32 master weights (CPU and GPU).
    - ``16-mixed``, ``16-true``: DeepSpeed ``fp16`` with dynamic loss scaling (GPU only).

    Args:
        precision: One of the precision strings above.
        device_type: The device type of the run (``"cpu"``, ``"cuda"``).

    Raises:
        ValueError: A precision DeepSpeed cannot train in (``64-true``), or float16 on the CPU.
    """

    def __init__(self, precision: str = "32-true", device_type: str = "cpu") -> None:
        super().__init__(device_type)
        if precision not in _DTYPES:
            raise ValueError(
                f"DeepSpeed does not train in precision={precision!r}. Choose one of: {', '.join(_DTYPES)}."
            )
        if precision.startswith("16-") and device_type == "cpu":
            raise ValueError(
                f"Fabric(precision={precision!r}) with DeepSpeed needs a GPU: DeepSpeed's float16 training with "
                "loss scaling does not run on the CPU. Use precision='bf16-mixed' or '32-true' on the CPU."
            )
        self.precision = precision
        self.dtype = _DTYPES[precision]

    @property
    def is_passthrough(self) -> bool:
        """float32 needs no casting, so the forward pass takes the fast path."""
        return self.precision == "32-true"

    @property
    def _true(self) -> bool:
        return self.precision.endswith("-true") and self.precision != "32-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """``-true`` variants cast the weights now; otherwise the engine casts them at set-up."""
        return module.to(dtype=self.dtype) if self._true else module

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """``-true`` variants create float tensors in the half dtype."""
        return default_dtype(self.dtype) if self._true else nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Cast floating inputs to the dtype the engine's weights have."""
        return data if self.is_passthrough else convert_floating_tensors(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        """Return floating outputs as float32, so losses computed outside the model are exact."""
        return data if self.is_passthrough else convert_floating_tensors(data, torch.get_default_dtype())
