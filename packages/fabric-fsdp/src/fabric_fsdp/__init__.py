"""fabric-fsdp: sharded strategies for fabric on FSDP2 (``fully_shard``) and DTensor.

Example::

    from fabric_core import Fabric

    fabric = Fabric(accelerator="cuda", devices=8, strategy="fsdp", precision="bf16-mixed")
    fabric.launch()
    model, optimizer = fabric.setup(model, optimizer)

Names are imported on first access: ``import fabric_fsdp`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.lazy import lazy_exports
from fabric_fsdp.__about__ import __version__

if TYPE_CHECKING:
    from fabric_fsdp._blocks import prepare_blocks
    from fabric_fsdp.checkpoint import optimizer_state_to_torch
    from fabric_fsdp.fsdp import FSDPStrategy
    from fabric_fsdp.model_parallel import ModelParallelStrategy
    from fabric_fsdp.precision import FSDPPrecision

__all__ = [
    "FSDPPrecision",
    "FSDPStrategy",
    "ModelParallelStrategy",
    "__version__",
    "optimizer_state_to_torch",
    "prepare_blocks",
]

_EXPORTS = {
    "FSDPStrategy": "fabric_fsdp.fsdp",
    "ModelParallelStrategy": "fabric_fsdp.model_parallel",
    "FSDPPrecision": "fabric_fsdp.precision",
    "optimizer_state_to_torch": "fabric_fsdp.checkpoint",
    "prepare_blocks": "fabric_fsdp._blocks",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
