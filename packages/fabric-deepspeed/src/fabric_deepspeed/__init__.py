"""fabric-deepspeed: DeepSpeed ZeRO strategies for fabric.

Installing the distribution registers ``deepspeed``, ``deepspeed_stage_1`` ...
``deepspeed_stage_3_offload_nvme`` and the ``"deepspeed"`` checkpoint format. Names are
imported on first access: importing this package imports neither torch nor deepspeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.lazy import lazy_exports
from fabric_deepspeed.__about__ import __version__

if TYPE_CHECKING:
    from fabric_deepspeed._config import DeepSpeedConfigError
    from fabric_deepspeed.checkpoint import DeepSpeedCheckpointFormat, consolidate_checkpoint
    from fabric_deepspeed.precision import DeepSpeedPrecision
    from fabric_deepspeed.strategy import DeepSpeedStrategy

__all__ = [
    "DeepSpeedCheckpointFormat",
    "DeepSpeedConfigError",
    "DeepSpeedPrecision",
    "DeepSpeedStrategy",
    "__version__",
    "consolidate_checkpoint",
]

_EXPORTS = {
    "DeepSpeedStrategy": "fabric_deepspeed.strategy",
    "DeepSpeedPrecision": "fabric_deepspeed.precision",
    "DeepSpeedConfigError": "fabric_deepspeed._config",
    "DeepSpeedCheckpointFormat": "fabric_deepspeed.checkpoint",
    "consolidate_checkpoint": "fabric_deepspeed.checkpoint",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
