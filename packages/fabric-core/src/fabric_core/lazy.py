"""Module attributes imported on first access, so importing a package stays cheap.

Plugin distributions use it in their ``__init__.py`` the way fabric-core does::

    from fabric_core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, {"MyStrategy": "my_package.strategy"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    module_name: str, exports: Mapping[str, str], missing: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a module whose names live in other modules.

    Args:
        module_name: The module that exports the names (for error messages and caching).
        exports: Each exported name mapped to ``"module"`` (same name there) or
            ``"module:Name"``.
        missing: For names a separate distribution provides, that distribution; importing
            such a name while it is not installed raises an ``ImportError`` saying what to
            install.

    Returns:
        The pair to assign to the module's ``__getattr__`` and ``__dir__``.
    """
    providers = dict(missing or {})

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        source, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError as error:
            distribution = providers.get(name)
            if distribution is None or error.name != source.partition(".")[0]:
                raise
            raise ImportError(
                f"{name} is provided by the distribution '{distribution}', which is not installed. "
                f"Install it with: pip install {distribution}"
            ) from None
        value = getattr(module, attribute or name)
        importlib.import_module(module_name).__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*importlib.import_module(module_name).__dict__, *exports})

    return __getattr__, __dir__
