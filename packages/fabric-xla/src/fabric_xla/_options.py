"""Argument checks shared by the XLA strategies."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fabric_core.strategies.config import StrategyConfig

__all__ = ["passed_as_plugin", "refuse_unknown_arguments"]


def refuse_unknown_arguments(owner: str, init: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Refuse the names in ``kwargs``: ``init`` takes ``**kwargs`` for the seed's signature only.

    Raises:
        TypeError: ``kwargs`` is not empty; the message lists the arguments ``init`` names.
    """
    if not kwargs:
        return
    named = [
        name
        for name, parameter in inspect.signature(init).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    ]
    raise TypeError(
        f"{owner} got unknown argument(s) {', '.join(sorted(kwargs))}. It takes: {', '.join(named)}."
    )


def passed_as_plugin(config: StrategyConfig, obj: object) -> bool:
    """Whether the user passed ``obj`` itself in ``Fabric(plugins=...)``."""
    plugins = (config.explicit or {}).get("plugins")
    items = plugins if isinstance(plugins, (list, tuple)) else [plugins]
    return any(item is obj for item in items)
