"""The config-shaping arguments of ``DeepSpeedStrategy``, and the checks they pass before anything runs.

``None`` stands for "not given" throughout: a given argument is a statement the user
config must agree with, a missing one leaves the user config (or a default) in charge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["EXTRA_SETTINGS", "OFFLOAD_DEVICES", "DeepSpeedArguments", "check_arguments"]

OFFLOAD_DEVICES: Final = ("cpu", "nvme")
"""Where ZeRO can offload optimizer states and parameters."""

EXTRA_SETTINGS: Final[dict[str, tuple[str, ...]]] = {
    # ZeRO communication and memory
    "contiguous_gradients": ("zero_optimization", "contiguous_gradients"),
    "overlap_comm": ("zero_optimization", "overlap_comm"),
    "allgather_partitions": ("zero_optimization", "allgather_partitions"),
    "reduce_scatter": ("zero_optimization", "reduce_scatter"),
    "allgather_bucket_size": ("zero_optimization", "allgather_bucket_size"),
    "reduce_bucket_size": ("zero_optimization", "reduce_bucket_size"),
    "sub_group_size": ("zero_optimization", "sub_group_size"),
    "stage3_max_live_parameters": ("zero_optimization", "stage3_max_live_parameters"),
    "stage3_max_reuse_distance": ("zero_optimization", "stage3_max_reuse_distance"),
    "stage3_prefetch_bucket_size": ("zero_optimization", "stage3_prefetch_bucket_size"),
    "stage3_param_persistence_threshold": ("zero_optimization", "stage3_param_persistence_threshold"),
    "stage3_gather_16bit_weights_on_model_save": (
        "zero_optimization",
        "stage3_gather_16bit_weights_on_model_save",
    ),
    # the optimizer step
    "gradient_clipping": ("gradient_clipping",),
    "zero_allow_untested_optimizer": ("zero_allow_untested_optimizer",),
    "zero_force_ds_cpu_optimizer": ("zero_force_ds_cpu_optimizer",),
    "logging_batch_size_per_gpu": ("train_micro_batch_size_per_gpu",),
    # float16 loss scaling (precision "16-mixed" / "16-true")
    "loss_scale": ("fp16", "loss_scale"),
    "initial_scale_power": ("fp16", "initial_scale_power"),
    "loss_scale_window": ("fp16", "loss_scale_window"),
    "hysteresis": ("fp16", "hysteresis"),
    "min_loss_scale": ("fp16", "min_loss_scale"),
    # deepspeed.checkpointing (activation checkpointing)
    "partition_activations": ("activation_checkpointing", "partition_activations"),
    "cpu_checkpointing": ("activation_checkpointing", "cpu_checkpointing"),
    "contiguous_memory_optimization": ("activation_checkpointing", "contiguous_memory_optimization"),
    "synchronize_checkpoint_boundary": ("activation_checkpointing", "synchronize_checkpoint_boundary"),
}
"""The further keyword arguments of ``DeepSpeedStrategy`` and where each goes in the config.

``pin_memory`` is accepted too: it sets ``pin_memory`` of every active offload section.
"""

_BOOLEANS: Final = ("offload_optimizer", "offload_parameters", "single_submit", "overlap_events")
_COUNTS: Final = (
    "params_buffer_count",
    "params_buffer_size",
    "max_in_cpu",
    "optimizer_buffer_count",
    "block_size",
    "queue_depth",
    "thread_count",
)


@dataclass(frozen=True)
class DeepSpeedArguments:
    """The config-shaping arguments of ``DeepSpeedStrategy``; ``None`` means "not given".

    ``extras`` holds the further keyword arguments (see :data:`EXTRA_SETTINGS`).
    """

    stage: int | None = None
    offload_optimizer: bool | None = None
    offload_parameters: bool | None = None
    offload_params_device: str | None = None
    offload_optimizer_device: str | None = None
    nvme_path: str | os.PathLike[str] | None = None
    params_buffer_count: int | None = None
    params_buffer_size: int | None = None
    max_in_cpu: int | None = None
    optimizer_buffer_count: int | None = None
    block_size: int | None = None
    queue_depth: int | None = None
    single_submit: bool | None = None
    overlap_events: bool | None = None
    thread_count: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        """The value of argument ``name`` (``None`` when not given)."""
        if name in self.extras:
            return self.extras[name]
        return getattr(self, name, None)

    def source(self, name: str) -> str | None:
        """The argument as the user wrote it (``"DeepSpeedStrategy(stage=3)"``), or ``None`` if not given."""
        value = self.value(name)
        return None if value is None else f"DeepSpeedStrategy({name}={value!r})"


def check_arguments(arguments: DeepSpeedArguments) -> None:
    """Refuse unknown keyword arguments and values of the wrong kind, before anything runs.

    Raises:
        TypeError: A keyword argument ``DeepSpeedStrategy`` does not know.
        ValueError: A stage, device, switch or count that is not valid.
    """
    unknown = sorted(set(arguments.extras) - set(EXTRA_SETTINGS) - {"pin_memory"})
    if unknown:
        accepted = ", ".join(sorted([*EXTRA_SETTINGS, "pin_memory"]))
        raise TypeError(
            f"DeepSpeedStrategy got unexpected argument(s) {', '.join(unknown)}. Besides its named arguments it "
            f"accepts: {accepted}. Put any other DeepSpeed setting in config={{...}}."
        )
    stage = arguments.stage
    if stage is not None and (isinstance(stage, bool) or stage not in (0, 1, 2, 3)):
        raise ValueError(f"DeepSpeedStrategy(stage={stage!r}) is not a ZeRO stage; use 0, 1, 2 or 3.")
    for name in ("offload_optimizer_device", "offload_params_device"):
        device = arguments.value(name)
        if device is not None and device not in OFFLOAD_DEVICES:
            raise ValueError(f"DeepSpeedStrategy({name}={device!r}) must be 'cpu' or 'nvme'.")
    for name in (*_BOOLEANS, "pin_memory"):
        flag = arguments.value(name)
        if flag is not None and not isinstance(flag, bool):
            raise ValueError(f"DeepSpeedStrategy({name}={flag!r}) must be True or False.")
    for name in _COUNTS:
        count = arguments.value(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"DeepSpeedStrategy({name}={count!r}) must be a positive integer.")
