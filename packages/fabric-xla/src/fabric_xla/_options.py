"""Argument checks shared by the XLA strategies."""

from __future__ import annotations

from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig

__all__ = ["one_precision", "passed_as_plugin"]


def one_precision(
    precision: Precision | None, precision_plugin: Precision | None, owner: str
) -> Precision | None:
    """The precision plugin given as ``precision=`` or ``precision_plugin=`` (one name only).

    Raises:
        ValueError: Both names were given.
    """
    if precision is not None and precision_plugin is not None:
        raise ValueError(
            f"{owner} got both precision= and precision_plugin=, which are two names for the same argument. "
            "Pass one of them."
        )
    return precision if precision is not None else precision_plugin


def passed_as_plugin(config: StrategyConfig, obj: object) -> bool:
    """Whether the user passed ``obj`` itself in ``Fabric(plugins=...)``."""
    plugins = (config.explicit or {}).get("plugins")
    items = plugins if isinstance(plugins, (list, tuple)) else [plugins]
    return any(item is obj for item in items)
