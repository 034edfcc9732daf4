"""The module named by the ``fabric`` entry point: it registers names and imports nothing heavy.

fabric calls the hook the first time anything asks for a strategy name. Registering a
``"module:Class"`` path means ``fabric_localsgd.strategy`` (and torch) is imported only when
someone builds one of these strategies.
"""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)
"""The fabric plugin API versions this module implements; fabric skips it if its own is not listed."""

_STRATEGY = "fabric_localsgd.strategy:LocalSGDStrategy"


@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``localsgd`` and its spawn and fork variants."""
    description = "Local SGD: replicas train alone and are averaged every {} steps; {}"
    registry.register(
        "localsgd",
        _STRATEGY,
        description=description.format(4, "re-runs the script in each process"),
        sync_every=4,
        start_method="popen",
    )
    registry.register(
        "localsgd_spawn",
        _STRATEGY,
        description=description.format(4, "runs fabric.launch(fn) in spawned processes"),
        sync_every=4,
        start_method="spawn",
    )
    registry.register(
        "localsgd_fork",
        _STRATEGY,
        description=description.format(4, "runs fabric.launch(fn) in forked processes"),
        sync_every=4,
        start_method="fork",
    )
