"""The entry point of fabric-fsdp: registers the sharded strategy names (imports nothing heavy)."""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)

_FSDP = "fabric_fsdp.fsdp:FSDPStrategy"
_MODEL_PARALLEL = "fabric_fsdp.model_parallel:ModelParallelStrategy"


# One registry.register call per name, written out so a reader sees every name where it is made:
# the repeated shape is the registration API (a table of calls), not copied logic.
@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``fsdp``, ``fsdp_cpu_offload`` and ``model_parallel``."""
    registry.register(
        "fsdp",
        _FSDP,
        description="Fully sharded data parallel (FSDP2): parameters, gradients and optimizer state sharded",
    )
    registry.register(
        "fsdp_cpu_offload",
        _FSDP,
        description="FSDP2 with sharded parameters, gradients and optimizer state kept in CPU memory",
        cpu_offload=True,
    )
    registry.register(
        "model_parallel",
        _MODEL_PARALLEL,
        description="Your parallelize_fn (tensor parallel + fully_shard) on a 2-D data x tensor device mesh",
    )
