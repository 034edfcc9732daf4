"""``fabric.clip_gradients`` under DeepSpeed: the norm now, the clip inside the next ``engine.step()``.

After the backward pass that ends an accumulation the gradients are reduced and, under
ZeRO, partitioned: each process holds the (averaged) gradient of its own slice of the
parameters, and the model's ``param.grad`` are released. DeepSpeed clips inside its step:
it computes the global L2 norm from the partitions (one all-reduce of a scalar per
parameter group) and scales its partition by ``max_norm / (norm + 1e-6)`` when that is
below 1, the formula of ``torch.nn.utils.clip_grad_norm_``.

So a norm clip is *requested* here and *applied* by DeepSpeed: the DeepSpeed optimizer's
clip value (``clip_grad``, from the config's ``gradient_clipping``) is set to ``max_norm``
for the next ``engine.step()`` only. The norm is computed now with DeepSpeed's own routine,
the number its step then clips with (ZeRO 1-3 and stage 0 in float32); for the other
optimizer wrappers (stage 0 in bf16 or fp16) it is only known inside the step, and the
returned tensor is filled then.

Value clipping has no DeepSpeed counterpart. It is done on the reduced gradients through
DeepSpeed's gradient access API (``deepspeed.utils``): exact; under ZeRO 1 and 2 it costs
one all-reduce per parameter (there is no public access to the local partition), under
ZeRO 3 nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["apply_norm_clip_for_step", "check_norm_type", "clamp_gradients", "clip_now", "total_grad_norm"]


def check_norm_type(norm_type: float) -> None:
    """DeepSpeed clips by the L2 norm only.

    Raises:
        ValueError: Another ``norm_type`` than 2.
    """
    if float(norm_type) != 2.0:
        raise ValueError(
            f"fabric.clip_gradients(norm_type={norm_type!r}): DeepSpeed computes and clips the L2 norm of the "
            "gradients only. Use norm_type=2 (the default), or clip_val=... to clamp each element."
        )


def total_grad_norm(engine: Any) -> torch.Tensor | None:
    """The global L2 norm of the reduced gradients, as the next ``engine.step()`` computes it.

    Must run on every process (it all-reduces under ZeRO), after the backward pass that
    ends the accumulation. ``None`` when the engine's optimizer computes it only inside
    its step (the bf16 and fp16 wrappers of stage 0).
    """
    optimizer = engine.optimizer
    if optimizer is engine.basic_optimizer:  # stage 0 in float32: module gradients are all-reduced
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=engine.device)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = float(getattr(optimizer, "loss_scale", 1.0) or 1.0)
    if callable(getattr(optimizer, "scaled_global_norm", None)):  # ZeRO 1 and 2
        norm = optimizer.scaled_global_norm()
    elif callable(getattr(optimizer, "_get_norm_groups", None)):  # ZeRO 3
        norm = _combine(optimizer._get_norm_groups())
    else:
        return None
    norm = torch.as_tensor(norm, dtype=torch.float32).reshape(())
    # DeepSpeed marks a non-finite group norm with -1.
    return torch.where(norm < 0, torch.full_like(norm, math.inf), norm) / scale


def _combine(norm_groups: list[Any]) -> torch.Tensor:
    norms = torch.stack([torch.as_tensor(n, dtype=torch.float32).reshape(()) for n in norm_groups])
    invalid = (~torch.isfinite(norms) | (norms < 0)).any()
    combined = torch.linalg.vector_norm(norms)
    return torch.where(invalid, torch.full_like(combined, math.inf), combined)


def clip_now(engine: Any, max_norm: float, norm: torch.Tensor) -> bool:
    """Clip the module's gradients in place when the engine steps a plain torch optimizer; ``False`` otherwise.

    Stage 0 in float32 keeps whole, all-reduced gradients on the module, so clipping
    them now is what DeepSpeed's step would do (``clip_grad_norm_`` over the module).
    """
    if engine.optimizer is not engine.basic_optimizer:
        return False
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for parameter in engine.module.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(coefficient.to(parameter.grad.device, parameter.grad.dtype))
    return True


@contextmanager
def apply_norm_clip_for_step(engine: Any, max_norm: float | None) -> Iterator[None]:
    """Run the block (``engine.step()``) with the DeepSpeed optimizer clipping at ``max_norm``.

    The clip value of the config (``gradient_clipping``) is restored afterwards, so a
    checkpoint records the configured value. ``None`` leaves the clip value alone.
    """
    optimizer = engine.optimizer
    if max_norm is None or not hasattr(optimizer, "clip_grad"):
        yield
        return
    configured = optimizer.clip_grad
    optimizer.clip_grad = max_norm
    try:
        yield
    finally:
        optimizer.clip_grad = configured


def clamp_gradients(engine: Any, clip_val: float) -> None:
    """Clamp every element of the reduced gradients to ``[-clip_val, clip_val]`` (every process calls).

    Clamping is element-wise, so a ZeRO-3 parameter's local partition of the gradient is
    clamped where it lies (``safe_get_local_grad`` / ``safe_set_local_grad``, no
    communication). Other parameters go through the full gradient
    (``safe_get_full_grad`` / ``safe_set_full_grad``: an all-reduce under ZeRO 1 and 2,
    nothing at stage 0). Under float16 the stored gradients are multiplied by the loss
    scale until the step, so they are clamped at ``clip_val`` times the scale.
    """
    from deepspeed.utils import (
        safe_get_full_grad,
        safe_get_local_grad,
        safe_set_full_grad,
        safe_set_local_grad,
    )

    limit = clip_val
    if engine.fp16_enabled():
        limit *= float(getattr(engine.optimizer, "loss_scale", 1.0) or 1.0)
    for parameter in engine.module.parameters():
        if not parameter.requires_grad:
            continue
        partitioned = hasattr(parameter, "ds_id") and parameter.grad is None
        get, set_ = (
            (safe_get_local_grad, safe_set_local_grad)
            if partitioned
            else (safe_get_full_grad, safe_set_full_grad)
        )
        grad = get(parameter)
        if grad is not None:
            set_(parameter, grad.clamp(-limit, limit))
