"""The keyword arguments of torch_xla's FSDP wrapper: checked, and layer-class sets turned into policies."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any

from torch import nn

__all__ = ["check_fsdp_kwargs", "wrapping_kwargs"]


def check_fsdp_kwargs(kwargs: dict[str, Any]) -> None:
    """Check that ``XlaFullyShardedDataParallel`` takes every name in ``kwargs``.

    Raises:
        TypeError: A name it does not take; the message lists those it does.
    """
    from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP

    accepted = set(inspect.signature(XLAFSDP.__init__).parameters) - {"self", "module"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"XLAFSDPStrategy got unknown argument(s) {', '.join(unknown)}. Extra keyword arguments are passed to "
            f"XlaFullyShardedDataParallel, which accepts: {', '.join(sorted(a for a in accepted if not a.startswith('_')))}."
        )


def wrapping_kwargs(
    kwargs: dict[str, Any],
    auto_wrap_policy: Callable[..., bool] | Collection[type[nn.Module]] | None,
    checkpointing: Collection[type[nn.Module]] | None,
) -> dict[str, Any]:
    """The wrapper's keyword arguments, with layer-class sets turned into torch_xla's policies."""
    result = dict(kwargs)
    if auto_wrap_policy is not None:
        if not callable(auto_wrap_policy):
            from torch_xla.distributed.fsdp.wrap import transformer_auto_wrap_policy

            auto_wrap_policy = functools.partial(
                transformer_auto_wrap_policy, transformer_layer_cls=set(auto_wrap_policy)
            )
        result["auto_wrap_policy"] = auto_wrap_policy
    if checkpointing:
        result["auto_wrapper_callable"] = functools.partial(_wrap_with_checkpointing, tuple(checkpointing))
    return result


def _wrap_with_checkpointing(
    layer_classes: tuple[type[nn.Module], ...], module: nn.Module, *args: Any, **kwargs: Any
) -> nn.Module:
    """Wrap ``module`` in FSDP, recomputing its activations in backward when it is one of ``layer_classes``."""
    from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP
    from torch_xla.distributed.fsdp import checkpoint_module

    if isinstance(module, layer_classes):
        module = checkpoint_module(module)
    return XLAFSDP(module, *args, **kwargs)
