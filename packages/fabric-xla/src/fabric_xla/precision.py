"""The precisions XLA strategies run: ``32-true``, ``bf16-true`` and ``bf16-mixed``.

XLA devices compute in float32 and bfloat16; TPUs have no float16 or float64 units worth
using, and bfloat16 keeps float32's range, so no gradient scaling is needed. The plugins
are fabric-core's own, set to the ``xla`` device type:

==============  ===========================================================================
``32-true``     float32 weights and compute
``bf16-true``   bfloat16 weights, inputs and compute (no float32 master copy)
``bf16-mixed``  float32 weights, forward under ``torch.autocast("xla", dtype=torch.bfloat16)``
==============  ===========================================================================
"""

from __future__ import annotations

from typing import Final

from fabric_core._registries import PRECISION_REGISTRY
from fabric_core.precision.precision import Precision
from fabric_xla._runtime import import_torch_xla

__all__ = ["XLA_PRECISIONS", "xla_precision"]

XLA_PRECISIONS: Final = ("32-true", "bf16-true", "bf16-mixed")
"""The precision strings XLA strategies accept."""


def xla_precision(precision: str, strategy_name: str = "An XLA strategy") -> Precision:
    """The precision plugin for ``precision`` on XLA devices.

    Args:
        precision: ``"32-true"``, ``"bf16-true"`` or ``"bf16-mixed"``.
        strategy_name: Names the strategy in the error message.

    Raises:
        ValueError: ``precision`` is not one XLA runs; the message lists those it does.
    """
    if precision not in XLA_PRECISIONS:
        raise ValueError(
            f"{strategy_name} does not run precision='{precision}'. XLA devices compute in float32 and bfloat16: "
            f"choose one of {', '.join(XLA_PRECISIONS)} (bf16-mixed is the usual choice on TPUs)."
        )
    if precision == "bf16-mixed":
        import_torch_xla()  # registers the "xla" autocast device
    return PRECISION_REGISTRY.build(precision, device_type="xla")  # type: ignore[no-any-return,unused-ignore]
