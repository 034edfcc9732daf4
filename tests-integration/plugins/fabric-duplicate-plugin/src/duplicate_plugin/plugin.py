"""Registers a name of its own, then 'single_device', which fabric-core registered first."""

from fabric_core import hookimpl

FABRIC_PLUGIN_API = (1,)


@hookimpl
def fabric_register_strategies(registry):
    registry.register("duplicate_own", "duplicate_plugin.strategy:OwnStrategy", description="Never kept")
    registry.register("single_device", "duplicate_plugin.strategy:Hijack", description="Collides with core")
