"""Precision plugins: the dtype of weights and compute, autocast and gradient scaling.

Each is registered under its precision string in ``PRECISION_REGISTRY``:

=============  ==============================================================
``32-true``    float32 weights and compute (default)
``64-true``    float64 weights and compute
``16-true``    float16 weights and compute
``bf16-true``  bfloat16 weights and compute
``16-mixed``   float32 weights, float16 autocast, dynamic gradient scaling
``bf16-mixed`` float32 weights, bfloat16 autocast
=============  ==============================================================

The legacy spellings ``32``, ``64``, ``16`` and ``"bf16"`` are accepted with a warning.
"""

from fabric_core._registries import PRECISION_REGISTRY, PrecisionRegistry
from fabric_core.precision.amp import MixedPrecision
from fabric_core.precision.double import DoublePrecision
from fabric_core.precision.half import HalfPrecision
from fabric_core.precision.precision import Precision

__all__ = [
    "PRECISION_REGISTRY",
    "DoublePrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "PrecisionRegistry",
]
