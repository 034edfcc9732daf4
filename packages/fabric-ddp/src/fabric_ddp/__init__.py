"""fabric-ddp: DistributedDataParallel strategies for fabric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.lazy import lazy_exports
from fabric_ddp.__about__ import __version__

if TYPE_CHECKING:
    from fabric_ddp.strategy import DDPStrategy

__all__ = ["DDPStrategy", "__version__"]

__getattr__, __dir__ = lazy_exports(__name__, {"DDPStrategy": "fabric_ddp.strategy"})
