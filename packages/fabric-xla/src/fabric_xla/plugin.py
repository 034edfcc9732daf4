"""The entry point of fabric-xla: registers its names by dotted path (imports neither torch nor torch_xla)."""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)

_NEEDS = ("torch_xla",)


# One registry.register call per name, written out so a reader sees every name where it is made:
# the repeated shape is the registration API (a table of calls), not copied logic.
@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``xla``, ``single_xla``, ``xla_fsdp`` and ``xla_spmd``."""
    registry.register(
        "xla",
        "fabric_xla.strategy:XLAStrategy",
        description="One process per XLA device (TPU core), gradients all-reduced at each optimizer step",
        requires=_NEEDS,
    )
    registry.register(
        "single_xla",
        "fabric_xla.single_device:SingleDeviceXLAStrategy",
        description="One process on one XLA device",
        requires=_NEEDS,
    )
    registry.register(
        "xla_fsdp",
        "fabric_xla.fsdp:XLAFSDPStrategy",
        description="torch_xla's FullyShardedDataParallel: one process per device, parameters sharded",
        requires=_NEEDS,
    )
    registry.register(
        "xla_spmd",
        "fabric_xla.spmd:XLASPMDStrategy",
        description="One process drives every device of the host; parameters and batches sharded by SPMD",
        requires=_NEEDS,
    )


@hookimpl
def fabric_register_accelerators(registry: Registry) -> None:
    """Register the XLA accelerator as ``tpu`` and ``xla``."""
    target = "fabric_xla.accelerator:XLAAccelerator"
    registry.register("tpu", target, description="TPUs and other XLA devices (torch_xla)", requires=_NEEDS)
    registry.register("xla", target, description="Alias of 'tpu'", requires=_NEEDS)


@hookimpl
def fabric_register_environments(registry: Registry) -> None:
    """Register the environment of processes that torch_xla started."""
    registry.register(
        "xla",
        "fabric_xla.environment:XLAEnvironment",
        description="Processes started by torch_xla.launch; ranks come from the XLA runtime",
        requires=_NEEDS,
    )


@hookimpl
def fabric_register_checkpoint_formats(registry: Registry) -> None:
    """Register the per-rank checkpoint directory that ``xla_fsdp`` writes."""
    registry.register(
        "xla_fsdp",
        "fabric_xla.formats:XLAFSDPFormat",
        description="One file per rank written by XLAFSDPStrategy(state_dict_type='sharded')",
    )
