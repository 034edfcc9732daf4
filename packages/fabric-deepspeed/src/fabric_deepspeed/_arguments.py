"""The config-shaping arguments of ``DeepSpeedStrategy``, and the checks they pass before anything runs.

``None`` stands for "not given" throughout: a given argument is a statement the user
config must agree with, a missing one leaves the user config (or a default) in charge.
``DeepSpeedStrategy`` has the seed's literal defaults in its signature (``stage=2``,
``offload_optimizer_device="cpu"``, ...); `given_arguments` turns an argument equal to
its documented default into "not given", so passing a default explicitly never conflicts
with a config nor counts as a detail that "has no effect".
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "EXTRA_SETTINGS",
    "OFFLOAD_DEVICES",
    "SEED_DEFAULTS",
    "DeepSpeedArguments",
    "check_arguments",
    "given_arguments",
]

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

SEED_DEFAULTS: Final[dict[str, Any]] = {
    "stage": 2,
    "offload_optimizer": False,
    "offload_parameters": False,
    "offload_params_device": "cpu",
    "nvme_path": None,
    "params_buffer_count": 5,
    "params_buffer_size": 100_000_000,
    "max_in_cpu": 1_000_000_000,
    "offload_optimizer_device": "cpu",
    "optimizer_buffer_count": 4,
    "block_size": 1048576,
    "queue_depth": 8,
    "single_submit": False,
    "overlap_events": True,
    "thread_count": 1,
}
"""The documented defaults of the config-shaping arguments (the seed's signature).

Each is also what DeepSpeed (or fabric, for ``stage``) uses when nothing is said, so an
argument equal to its default states nothing: the user config, if any, stays in charge.
"""

_BOOLEANS: Final = ("offload_optimizer", "offload_parameters", "single_submit", "overlap_events")
_SWITCH_DEVICES: Final = {
    "offload_optimizer": "offload_optimizer_device",
    "offload_parameters": "offload_params_device",
}
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

    ``extras`` holds the further keyword arguments (see `EXTRA_SETTINGS`).
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


def given_arguments(values: Mapping[str, Any], extras: Mapping[str, Any]) -> DeepSpeedArguments:
    """The arguments as statements: each value equal to its `SEED_DEFAULTS` entry becomes ``None``.

    A value counts as the default only if it has the default's type too (``stage=2``
    is the default, ``stage=2.0`` or ``single_submit=0`` are checked as given values).

    Args:
        values: The config-shaping arguments by name (the keys of `SEED_DEFAULTS`).
        extras: The further keyword arguments (see `EXTRA_SETTINGS`).
    """
    given = {name: None if _is_default(name, value) else value for name, value in values.items()}
    return DeepSpeedArguments(**given, extras=dict(extras))


def _is_default(name: str, value: Any) -> bool:
    default = SEED_DEFAULTS[name]
    return value is default or (type(value) is type(default) and value == default)


def check_arguments(arguments: DeepSpeedArguments) -> None:
    """Refuse unknown keyword arguments and values of the wrong kind, before anything runs.

    Raises:
        TypeError: A keyword argument ``DeepSpeedStrategy`` does not know.
        ValueError: A stage, device, switch or count that is not valid.
    """
    unknown = sorted(set(arguments.extras) - set(EXTRA_SETTINGS) - {"pin_memory"})
    if unknown:
        accepted = ", ".join(sorted([*EXTRA_SETTINGS, "pin_memory"]))
        names = [*SEED_DEFAULTS, *EXTRA_SETTINGS, "pin_memory", "remote_device", "config", "logging_level"]
        close = [match for name in unknown for match in difflib.get_close_matches(name, names, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TypeError(
            f"DeepSpeedStrategy got unexpected argument(s) {', '.join(unknown)}. Besides its named arguments it "
            f"accepts: {accepted}. Put any other DeepSpeed setting in config={{...}}.{hint}"
        )
    stage = arguments.stage
    if stage is not None and (
        isinstance(stage, bool) or not isinstance(stage, int) or stage not in (0, 1, 2, 3)
    ):
        raise ValueError(f"DeepSpeedStrategy(stage={stage!r}) is not a ZeRO stage; use 0, 1, 2 or 3.")
    for name in ("offload_optimizer_device", "offload_params_device"):
        device = arguments.value(name)
        if device is not None and device not in OFFLOAD_DEVICES:
            raise ValueError(f"DeepSpeedStrategy({name}={device!r}) must be 'cpu' or 'nvme'.")
    for name in (*_BOOLEANS, "pin_memory"):
        flag = arguments.value(name)
        if flag is not None and not isinstance(flag, bool):
            device = _SWITCH_DEVICES.get(name)
            hint = (
                f" It is a switch; the device is a separate argument: {name}=True, {device}={flag!r}"
                + (" (the default)." if flag == SEED_DEFAULTS[device] else ".")
                if device is not None and flag in OFFLOAD_DEVICES
                else ""
            )
            raise ValueError(f"DeepSpeedStrategy({name}={flag!r}) must be True or False.{hint}")
    for name in _COUNTS:
        count = arguments.value(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"DeepSpeedStrategy({name}={count!r}) must be a positive integer.")
