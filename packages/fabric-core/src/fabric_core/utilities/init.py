"""Creating modules without paying for weight initialisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_INIT_FUNCTIONS = {
    getattr(torch.nn.init, name)
    for name in (
        "uniform_",
        "normal_",
        "trunc_normal_",
        "constant_",
        "ones_",
        "zeros_",
        "eye_",
        "dirac_",
        "xavier_uniform_",
        "xavier_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "orthogonal_",
        "sparse_",
    )
}
_TENSOR_INIT_METHODS = {
    torch.Tensor.uniform_,
    torch.Tensor.normal_,
    torch.Tensor.fill_,
    torch.Tensor.zero_,
    torch.Tensor.random_,
    torch.Tensor.exponential_,
}


class SkipParameterInit(TorchFunctionMode):
    """Turns in-place weight initialisation into no-ops inside the block.

    Parameters keep whatever memory ``torch.empty`` gave them, which is useful when the
    weights are loaded from a checkpoint right after the module is built: building a
    large model this way costs only the allocation. Only in-place initialisers
    (``torch.nn.init.*`` and ``Tensor.uniform_``/``normal_``/...) are skipped; other
    computations run normally.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func in _INIT_FUNCTIONS or func in _TENSOR_INIT_METHODS:
            return args[0] if args else kwargs.get("tensor") if kwargs else None
        return func(*args, **(kwargs or {}))
