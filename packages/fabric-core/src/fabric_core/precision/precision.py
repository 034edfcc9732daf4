"""The precision interface, which is also the ``32-true`` plugin."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer


class Precision:
    """Full float32 precision, and the interface every precision plugin implements.

    A precision plugin decides the dtype of a module's weights, the context the forward
    pass runs in (autocast), how inputs and outputs are cast, and how the backward pass
    and optimizer step run (gradient scaling).

    Args:
        device_type: The ``torch.device`` type the computation runs on; plugins that use
            autocast or gradient scaling need it. The connector passes the accelerator's.
    """

    precision: str = "32-true"

    def __init__(self, device_type: str = "cpu") -> None:
        self.device_type = device_type

    @property
    def is_passthrough(self) -> bool:
        """True when forward passes need no casting and no context (enables the fast path)."""
        return type(self) is Precision

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's weights to this precision's dtype (in place) and return it."""
        return module

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """A context in which newly created float tensors get this precision's dtype."""
        return nullcontext()

    def module_init_context(self) -> AbstractContextManager[Any]:
        """A context in which modules are created with weights in this precision's dtype."""
        return self.tensor_init_context()

    def forward_context(self) -> AbstractContextManager[Any]:
        """The context the forward pass runs in (e.g. autocast)."""
        return nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Cast a forward pass's inputs."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Cast a forward pass's outputs."""
        return data

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass from ``tensor``."""
        tensor.backward(*args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Run ``optimizer.step`` (with unscaling and skipping when gradients are scaled)."""
        return optimizer.step(**kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Divide scaled gradients by the loss scale, before they are clipped or inspected."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints (the loss scale, for instance)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def teardown(self) -> None:
        """Undo global changes this plugin made."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device_type={self.device_type!r})"
