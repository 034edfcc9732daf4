"""Names that first-party plugin distributions register, for "pip install ..." hints.

Used only to word the error for a name nobody registered; the plugins themselves
register their names through the entry point like any third-party plugin.
"""

from __future__ import annotations

from typing import Final

STRATEGY_PROVIDERS: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true"),
        "fabric-ddp",
    ),
    **dict.fromkeys(("fsdp", "fsdp_cpu_offload", "model_parallel"), "fabric-fsdp"),
    **dict.fromkeys(
        (
            "deepspeed",
            "deepspeed_stage_1",
            "deepspeed_stage_1_offload",
            "deepspeed_stage_2",
            "deepspeed_stage_2_offload",
            "deepspeed_stage_3",
            "deepspeed_stage_3_offload",
            "deepspeed_stage_3_offload_nvme",
        ),
        "fabric-deepspeed",
    ),
    **dict.fromkeys(("xla", "single_xla", "xla_fsdp", "xla_spmd"), "fabric-xla"),
}

ACCELERATOR_PROVIDERS: Final[dict[str, str]] = {"tpu": "fabric-xla", "xla": "fabric-xla"}

ENVIRONMENT_PROVIDERS: Final[dict[str, str]] = {"xla": "fabric-xla"}
