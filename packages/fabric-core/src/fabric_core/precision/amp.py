"""The ``16-mixed`` and ``bf16-mixed`` precision plugins (automatic mixed precision)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.precision._cast import cast_floating
from fabric_core.precision.precision import Precision

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_NAMES = {"16-mixed": "float16", "bf16-mixed": "bfloat16", "float16": "float16", "bfloat16": "bfloat16"}


class MixedPrecision(Precision):
    """float32 weights with the forward pass under ``torch.autocast``.

    With float16, the loss is multiplied by a dynamic scale before backward so small
    gradients do not underflow; the optimizer step unscales them and is skipped when
    they overflowed (``torch.amp.GradScaler``). bfloat16 has float32's range and needs
    no scaling. Floating-point inputs of the forward pass are cast to the autocast dtype,
    and floating outputs are returned as float32.

    Constructible as in Lightning Fabric: ``MixedPrecision("16-mixed", "cuda")``.

    Args:
        precision: ``"16-mixed"`` or ``"bf16-mixed"`` (or the dtype names ``"float16"``,
            ``"bfloat16"``).
        device: The device type autocast runs on (``"cpu"``, ``"cuda"``, ...).
        scaler: A ``torch.amp.GradScaler`` to use instead of the default (float16 only).
        dtype: Another name for ``precision`` (keyword only).
        device_type: Another name for ``device`` (keyword only).

    Raises:
        ValueError: The precision is not a mixed one, a scaler is given for bfloat16, or
            autocast does not support the device type.
    """

    def __init__(
        self,
        precision: str = "bf16-mixed",
        device: str = "cpu",
        scaler: torch.amp.GradScaler | None = None,
        *,
        dtype: str | None = None,
        device_type: str | None = None,
    ) -> None:
        name = _NAMES.get(dtype if dtype is not None else precision)
        device = device_type if device_type is not None else device
        super().__init__(device)
        if name is None:
            raise ValueError(
                f"MixedPrecision({dtype or precision!r}) is not supported; use '16-mixed' or 'bf16-mixed'."
            )
        if scaler is not None and name == "bfloat16":
            raise ValueError(
                "A gradient scaler is only used with float16; bfloat16 mixed precision needs none."
            )
        if not torch.amp.autocast_mode.is_autocast_available(device):
            raise ValueError(f"torch.autocast does not support the device type '{device}'.")
        self.dtype = _DTYPES[name]
        self.precision = "16-mixed" if name == "float16" else "bf16-mixed"
        if scaler is None and name == "float16":
            scaler = torch.amp.GradScaler(device)
        self.scaler = scaler

    def forward_context(self) -> AbstractContextManager[Any]:
        """Autocast to the mixed dtype."""
        return torch.autocast(self.device_type, dtype=self.dtype)

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """Weights stay float32: nothing changes at initialisation."""
        return super().tensor_init_context()

    def convert_input(self, data: Any) -> Any:
        """Cast floating inputs to the autocast dtype."""
        return cast_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        """Return floating outputs as float32, so losses computed outside autocast are exact."""
        return cast_floating(data, torch.get_default_dtype())

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Backward from the scaled loss when a scaler is used."""
        if self.scaler is not None:
            tensor = self.scaler.scale(tensor)
        tensor.backward(*args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Unscale, step unless gradients overflowed, and update the loss scale."""
        if self.scaler is None:
            return optimizer.step(**kwargs)
        result = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return result

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Divide the gradients by the loss scale; calling it again before the step does nothing.

        ``GradScaler.unscale_`` refuses a second call between two steps, so clipping twice, or
        a strategy that unscales in ``optimizer_step`` after the user clipped, would fail. The
        scaler's own record of the optimizer says whether this step's gradients are unscaled
        already; the step that follows (``scaler.step``) does not unscale them again.
        """
        if self.scaler is None or not self.scaler.is_enabled():
            return
        from torch.amp.grad_scaler import OptState

        # torch keeps no public record of it; the scaler clears this one in update().
        state = self.scaler._per_optimizer_states.get(id(optimizer))
        if state is not None and state["stage"] is not OptState.READY:
            return
        self.scaler.unscale_(optimizer)

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scaler's state."""
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(state_dict)
