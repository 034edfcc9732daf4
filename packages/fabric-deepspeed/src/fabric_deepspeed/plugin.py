"""The entry point of fabric-deepspeed: registers the DeepSpeed names (imports neither torch nor deepspeed)."""

from __future__ import annotations

from typing import Any

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)

_STRATEGY = "fabric_deepspeed.strategy:DeepSpeedStrategy"
_REQUIRES = ("deepspeed",)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "deepspeed": ("DeepSpeed ZeRO; stage 2 unless the config says otherwise", {}),
    "deepspeed_stage_1": ("DeepSpeed ZeRO stage 1: optimizer states partitioned", {"stage": 1}),
    "deepspeed_stage_1_offload": (
        "ZeRO stage 1 with optimizer states on the CPU",
        {"stage": 1, "offload_optimizer": True},
    ),
    "deepspeed_stage_2": ("DeepSpeed ZeRO stage 2: optimizer states and gradients partitioned", {"stage": 2}),
    "deepspeed_stage_2_offload": (
        "ZeRO stage 2 with optimizer states on the CPU",
        {"stage": 2, "offload_optimizer": True},
    ),
    "deepspeed_stage_3": ("DeepSpeed ZeRO stage 3: parameters partitioned too", {"stage": 3}),
    "deepspeed_stage_3_offload": (
        "ZeRO stage 3 with optimizer states and parameters on the CPU",
        {"stage": 3, "offload_optimizer": True, "offload_parameters": True},
    ),
    "deepspeed_stage_3_offload_nvme": (
        "ZeRO stage 3 with optimizer states and parameters on NVMe",
        {
            "stage": 3,
            "offload_optimizer": True,
            "offload_parameters": True,
            "remote_device": "nvme",
            "offload_params_device": "nvme",
            "offload_optimizer_device": "nvme",
        },
    ),
}
"""The registered names: a description and the ``DeepSpeedStrategy`` arguments of each."""


# One registry.register call per name, written out so a reader sees every name where it is made:
# the repeated shape is the registration API (a table of calls), not copied logic.
@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``deepspeed`` and its ZeRO presets."""
    for name, (description, init_params) in PRESETS.items():
        registry.register(name, _STRATEGY, description=description, requires=_REQUIRES, **init_params)


@hookimpl
def fabric_register_checkpoint_formats(registry: Registry) -> None:
    """Register the DeepSpeed checkpoint directory format for ``fabric checkpoint consolidate``."""
    registry.register(
        "deepspeed",
        "fabric_deepspeed.checkpoint:DeepSpeedCheckpointFormat",
        description="A DeepSpeed ZeRO checkpoint directory (consolidated to float32 weights)",
        requires=_REQUIRES,
    )
