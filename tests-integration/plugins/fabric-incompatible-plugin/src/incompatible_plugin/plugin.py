"""Declares plugin API version 99 only, so fabric must skip it without calling its hook."""

from fabric_core import hookimpl

FABRIC_PLUGIN_API = (99,)


@hookimpl
def fabric_register_strategies(registry):
    registry.register("from_the_future", "incompatible_plugin.strategy:FutureStrategy")
