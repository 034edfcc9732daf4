"""The hook specification that plugin distributions implement.

A plugin is a module named by an entry point in the ``fabric`` group::

    [project.entry-points.fabric]
    my_plugin = "my_package.plugin"

The module holds functions marked with `fabric_core.hookimpl` whose names are the
hooks below. Each hook receives a registry and registers names into it, preferably with
``"module:Class"`` paths so nothing heavy is imported until the name is used::

    from fabric_core import hookimpl

    @hookimpl
    def fabric_register_strategies(registry):
        registry.register("my_strategy", "my_package.strategy:MyStrategy", description="...")

The hook names are public API: new hooks may be added, existing ones are never renamed.
A plugin module may declare which plugin API versions it supports with a module-level
``FABRIC_PLUGIN_API = (1,)`` (or one integer); a plugin that does not list
`PLUGIN_API_VERSION` is skipped whole, with a message naming both versions, and a
module that declares nothing is loaded. ``fabric_core.testing`` checks that a strategy a
plugin registers keeps the ``Strategy`` contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from fabric_core.registry import Registry

PROJECT_NAME: Final = "fabric"
"""The pluggy project name; markers for other names are ignored."""

ENTRY_POINT_GROUP: Final = "fabric"
"""The entry-point group in which plugin distributions declare their plugin module."""

PLUGIN_API_VERSION: Final = 1
"""The version of this hook specification. Bumped only when a hook changes incompatibly."""

hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin function as an implementation of a ``fabric_*`` hook."""


@hookspec
def fabric_register_strategies(registry: Registry) -> None:
    """Register strategies by name into the strategy registry.

    Args:
        registry: The `StrategyRegistry`. Call
            ``registry.register(name, "module:Class", description=..., **init_params)``.
    """


@hookspec
def fabric_register_accelerators(registry: Registry) -> None:
    """Register accelerators (``"cpu"``, ``"cuda"``, ...) into the accelerator registry."""


@hookspec
def fabric_register_environments(registry: Registry) -> None:
    """Register cluster environments (``"slurm"``, ``"torchelastic"``, ...).

    The registered class must provide a ``detect()`` static method; the registry's
    ``detection_priority`` init parameter orders automatic detection (lower runs first).
    """


@hookspec
def fabric_register_precisions(registry: Registry) -> None:
    """Register precision plugins under their precision string (``"bf16-mixed"``, ...)."""


@hookspec
def fabric_register_checkpoint_formats(registry: Registry) -> None:
    """Register checkpoint formats that ``fabric checkpoint consolidate`` can turn into one file.

    The registered class subclasses `fabric_core.io.formats.CheckpointFormat`: a
    ``detect(path)`` static method and a ``consolidate(path, output)`` method.
    """
