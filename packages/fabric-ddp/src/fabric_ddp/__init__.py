"""fabric-ddp: DistributedDataParallel strategies for fabric."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fabric_ddp.__about__ import __version__

if TYPE_CHECKING:
    from fabric_ddp.strategy import DDPStrategy

__all__ = ["DDPStrategy", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "DDPStrategy":
        from fabric_ddp.strategy import DDPStrategy

        return DDPStrategy
    raise AttributeError(f"module 'fabric_ddp' has no attribute '{name}'")
