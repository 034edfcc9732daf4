"""fabric-localsgd: local SGD for fabric, a third-party strategy plugin.

``LocalSGDStrategy`` is imported on first access, so discovering the plugin stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fabric_localsgd.strategy import LocalSGDStrategy

__all__ = ["LocalSGDStrategy", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "LocalSGDStrategy":
        from fabric_localsgd.strategy import LocalSGDStrategy

        return LocalSGDStrategy
    raise AttributeError(f"module 'fabric_localsgd' has no attribute '{name}'")
