"""The mixed precision plugin of the FSDP strategy: low-precision all-gathers, float32 shards."""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy

from fabric_core.precision.amp import MixedPrecision

__all__ = ["FSDPPrecision"]


class FSDPPrecision(MixedPrecision):
    """``16-mixed`` / ``bf16-mixed`` for FSDP2: what ``Fabric(strategy="fsdp", precision=...)`` uses.

    In memory, the sharded parameters (and so the optimizer's master weights) stay float32.
    On the wire, FSDP2 casts each shard to the low dtype before the all-gather, so gathered
    parameters and forward/backward compute are in that dtype and all-gathers move half the
    bytes; gradients are reduce-scattered in float32 into the float32 shards
    (`mp_policy`). The forward also runs under ``torch.autocast``, which keeps
    numerically sensitive operations (softmax, norms, losses) in float32, and float outputs
    are returned as float32.

    With float16, the loss is scaled by a ``ShardedGradScaler``, which agrees across
    processes on whether any shard overflowed, so all processes skip the same steps.

    Args:
        dtype: ``"float16"`` (``16-mixed``) or ``"bfloat16"`` (``bf16-mixed``).
        device_type: The device type autocast runs on.
    """

    def __init__(self, dtype: str = "bfloat16", device_type: str = "cpu") -> None:
        scaler = None
        if dtype == "float16":
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            scaler = ShardedGradScaler(device=device_type)
        super().__init__(dtype=dtype, device_type=device_type, scaler=scaler)

    @property
    def mp_policy(self) -> MixedPrecisionPolicy:
        """The FSDP2 policy: gather parameters in the low dtype, reduce gradients in float32."""
        return MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)
