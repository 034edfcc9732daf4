"""The entry point of fabric-ddp: registers the DDP strategy names (imports nothing heavy)."""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)

_STRATEGY = "fabric_ddp.strategy:DDPStrategy"


# One registry.register call per name, written out so a reader sees every name where it is made:
# the repeated shape is the registration API (a table of calls), not copied logic.
@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``ddp`` and its launch variants."""
    registry.register(
        "ddp",
        _STRATEGY,
        description="DistributedDataParallel; re-runs the script in each process",
        start_method="popen",
    )
    registry.register(
        "ddp_spawn",
        _STRATEGY,
        description="DDP running fabric.launch(fn) in spawned processes",
        start_method="spawn",
    )
    registry.register(
        "ddp_fork",
        _STRATEGY,
        description="DDP running fabric.launch(fn) in forked processes",
        start_method="fork",
    )
    registry.register(
        "ddp_notebook",
        _STRATEGY,
        description="DDP in forked processes, usable from a notebook",
        start_method="fork",
    )
    registry.register(
        "ddp_find_unused_parameters_true",
        _STRATEGY,
        description="DDP that tolerates parameters unused in forward",
        start_method="popen",
        find_unused_parameters=True,
    )
