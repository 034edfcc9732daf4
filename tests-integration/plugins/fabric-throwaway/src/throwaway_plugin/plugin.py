"""The plugin module named by the entry point: registrations only, no heavy imports."""

from fabric_core import hookimpl

FABRIC_PLUGIN_API = (1,)


@hookimpl
def fabric_register_strategies(registry):
    registry.register(
        "throwaway",
        "throwaway_plugin.strategy:ThrowawayStrategy",
        description="Single device, counting optimizer steps",
    )
