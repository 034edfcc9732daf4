"""One DeepSpeed config from DeepSpeedStrategy's arguments, Fabric's precision and a user config.

Vocabulary of this module:

- *user config*: the dict or JSON file passed as ``DeepSpeedStrategy(config=...)``.
- *setting*: one value the strategy wants at a *path* of the config
  (``("zero_optimization", "stage")``), with its *source*: the argument that asked for it
  (``"DeepSpeedStrategy(stage=3)"``), or ``None`` for a default.
- *conflict*: a setting with a source whose value differs from the value already at its
  path. A conflict is an error naming both values; a default never conflicts (a value the
  user config holds replaces it).

Each ``resolve_*`` function turns one concern into settings; `build_config` merges
them into the user config and `validate_config` checks the result. Nothing here
imports deepspeed.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fabric_deepspeed._arguments import EXTRA_SETTINGS, DeepSpeedArguments

__all__ = [
    "DEFAULT_STAGE",
    "DeepSpeedConfigError",
    "Setting",
    "build_config",
    "check_types",
    "is_enabled",
    "load_user_config",
    "merge_settings",
    "precision_from_config",
    "resolve_aio",
    "resolve_defaults",
    "resolve_extras",
    "resolve_offload",
    "resolve_precision",
    "resolve_zero",
    "validate_config",
    "zero_stage",
]

DEFAULT_STAGE: Final = 2
"""The ZeRO stage when neither ``stage=`` nor the user config names one."""

DEFAULT_NVME_PATH: Final = "/local_nvme"
"""Where NVMe offload writes when ``nvme_path`` is not given."""

AUTO: Final = "auto"
_USER_CONFIG: Final = "the DeepSpeed config"

_FLOAT16_ONLY: Final = (
    "loss_scale",
    "initial_scale_power",
    "loss_scale_window",
    "hysteresis",
    "min_loss_scale",
)
_AIO: Final = ("block_size", "queue_depth", "single_submit", "overlap_events", "thread_count")

SECTIONS: Final = (
    "zero_optimization", "fp16", "bf16", "amp", "optimizer", "scheduler", "activation_checkpointing", "aio",
    "flops_profiler", "tensorboard", "wandb", "csv_monitor", "comet", "comms_logger", "autotuning", "checkpoint",
    "data_types", "compression_training", "data_efficiency", "elasticity", "pipeline", "sparse_attention",
    "curriculum_learning", "nebula", "hybrid_engine", "compile", "timers", "tensor_parallel", "weight_quantization",
    "zero_optimization.offload_optimizer", "zero_optimization.offload_param",
)  # fmt: skip
"""Config entries that DeepSpeed reads as sections (dicts), dotted below the top."""

_POSITIVE_INTEGERS: Final = (
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print",
)  # fmt: skip
_NUMBERS: Final = ("gradient_clipping", "gradient_predivide_factor")
_FLAGS: Final = (
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "wall_clock_breakdown", "memory_breakdown",
    "prescale_gradients", "sparse_gradients", "dump_state", "disable_allgather",
)  # fmt: skip
_OTHER_KEYS: Final = (
    "communication_data_type", "seq_parallel_communication_data_type", "gradient_allreduce_op",
    "zero_quantized_weights", "dataloader_drop_last", "torch_autocast", "sequence_parallel_size",
    "disable_python_gc", "use_data_before_expert_parallel_",
)  # fmt: skip
TOP_LEVEL_KEYS: Final = tuple(
    dict.fromkeys(
        [
            *(name for name in SECTIONS if "." not in name),
            *_POSITIVE_INTEGERS,
            *_NUMBERS,
            *_FLAGS,
            *_OTHER_KEYS,
        ]
    )
)
"""Top-level keys of DeepSpeed's config that fabric knows: a key close to one of them is taken for a typo,
since DeepSpeed ignores keys it does not read."""
_OFFLOAD_DEVICES: Final = ("cpu", "nvme", "none", AUTO)


class DeepSpeedConfigError(ValueError):
    """The DeepSpeed config cannot be built: two places disagree, or a value is invalid."""


@dataclass(frozen=True)
class Setting:
    """One value the strategy wants in the DeepSpeed config.

    Attributes:
        path: The keys leading to the value, from the top of the config.
        value: The value.
        source: How the user asked for it (``"DeepSpeedStrategy(stage=3)"``), or ``None``
            for a default that a value in the user config replaces.
    """

    path: tuple[str, ...]
    value: Any
    source: str | None = None


def load_user_config(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """A private copy of the user's config: ``{}`` for ``None``, a deep copy of a dict, or a JSON file read.

    DeepSpeed's older spelling ``"bfloat16"`` is renamed ``"bf16"`` so both are checked alike.

    Raises:
        FileNotFoundError: A path that does not exist.
        DeepSpeedConfigError: A file that is not a JSON object, or both ``bf16`` and ``bfloat16``.
        TypeError: Something that is neither a dict nor a path.
    """
    if config is None:
        loaded: Any = {}
    elif isinstance(config, Mapping):
        loaded = copy.deepcopy(dict(config))
    elif isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(
                f"DeepSpeedStrategy(config='{path}'): no such file. Pass a dict or the path of a DeepSpeed JSON config."
            )
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DeepSpeedConfigError(f"The DeepSpeed config '{path}' is not valid JSON: {error}.") from None
        if not isinstance(loaded, dict):
            raise DeepSpeedConfigError(f"The DeepSpeed config '{path}' must hold a JSON object at the top.")
    else:
        raise TypeError(
            f"DeepSpeedStrategy(config=...) takes a dict or the path of a JSON file, got {type(config).__name__}."
        )
    _check_keys(loaded)
    if "bfloat16" in loaded:
        if "bf16" in loaded:
            raise DeepSpeedConfigError(
                "The DeepSpeed config has both 'bf16' and its old spelling 'bfloat16'; keep only 'bf16'."
            )
        loaded["bf16"] = loaded.pop("bfloat16")
    return loaded


# -- resolve: one concern each ---------------------------------------------------------


def resolve_zero(arguments: DeepSpeedArguments) -> list[Setting]:
    """The ZeRO stage: the ``stage`` argument, else the user config's, else `DEFAULT_STAGE`."""
    if arguments.stage is not None:
        return [Setting(("zero_optimization", "stage"), arguments.stage, arguments.source("stage"))]
    return [Setting(("zero_optimization", "stage"), DEFAULT_STAGE)]


@dataclass(frozen=True)
class _OffloadKind:
    section: str
    switch: str
    device: str
    buffers: Mapping[str, str]
    what: str


_OPTIMIZER_OFFLOAD: Final = _OffloadKind(
    "offload_optimizer", "offload_optimizer", "offload_optimizer_device", {"optimizer_buffer_count": "buffer_count"},
    "the optimizer states are",
)  # fmt: skip
_PARAMETER_OFFLOAD: Final = _OffloadKind(
    "offload_param",
    "offload_parameters",
    "offload_params_device",
    {"params_buffer_count": "buffer_count", "params_buffer_size": "buffer_size", "max_in_cpu": "max_in_cpu"},
    "the parameters are",
)


def resolve_offload(arguments: DeepSpeedArguments, user: Mapping[str, Any]) -> list[Setting]:
    """The ``offload_optimizer`` and ``offload_param`` sections of ``zero_optimization``.

    A section is active when its switch (``offload_optimizer=True``, ``offload_parameters=True``)
    is given or the user config offloads already; its device, NVMe path and buffer arguments
    then fill it. Pinned memory is off unless ``pin_memory=True`` (pinning needs a GPU driver
    and gains nothing on a CPU-only machine). Offloading the optimizer lets a client torch
    optimizer run on the CPU (``zero_force_ds_cpu_optimizer: false``) instead of demanding
    DeepSpeed's compiled ``DeepSpeedCPUAdam``.

    Raises:
        DeepSpeedConfigError: An offload detail is given while nothing is offloaded there.
    """
    settings: list[Setting] = []
    devices: list[str] = []
    for kind in (_OPTIMIZER_OFFLOAD, _PARAMETER_OFFLOAD):
        section, device = _resolve_offload_section(kind, arguments, user)
        settings += section
        if device is not None:
            devices.append(device)
    if not devices:
        reason = "nothing is offloaded. Pass offload_optimizer=True or offload_parameters=True"
        _refuse_unused(arguments, ("pin_memory",), reason)
    if "nvme" not in devices:
        reason = "nothing is offloaded to NVMe. Pass offload_optimizer_device='nvme' or offload_params_device='nvme'"
        _refuse_unused(arguments, ("nvme_path",), reason)
    return settings


def _resolve_offload_section(
    kind: _OffloadKind, arguments: DeepSpeedArguments, user: Mapping[str, Any]
) -> tuple[list[Setting], str | None]:
    path = ("zero_optimization", kind.section)
    user_device = _lookup(user, (*path, "device"))
    user_offloads = user_device not in (None, AUTO, "none")
    switch = arguments.value(kind.switch)
    details = (kind.device, *kind.buffers)
    if switch is False:
        _refuse_unused(arguments, details, f"{kind.switch}=False")
        return [Setting((*path, "device"), "none", arguments.source(kind.switch))], None
    if switch is None and not user_offloads:
        _refuse_unused(arguments, details, f"{kind.what} not offloaded. Pass {kind.switch}=True as well")
        return [], None
    settings = []
    device: str = arguments.value(kind.device) or (user_device if user_offloads else "cpu")
    if arguments.value(kind.device) is not None:
        settings.append(Setting((*path, "device"), device, arguments.source(kind.device)))
    elif not user_offloads:
        settings.append(Setting((*path, "device"), device, arguments.source(kind.switch)))
    if device == "nvme":
        nvme = arguments.value("nvme_path")
        value = str(nvme) if nvme is not None else DEFAULT_NVME_PATH
        settings.append(Setting((*path, "nvme_path"), value, arguments.source("nvme_path")))
    for name, key in kind.buffers.items():
        if arguments.value(name) is not None:
            settings.append(Setting((*path, key), arguments.value(name), arguments.source(name)))
    pin = arguments.value("pin_memory")
    settings.append(Setting((*path, "pin_memory"), bool(pin), arguments.source("pin_memory")))
    if kind is _OPTIMIZER_OFFLOAD:
        settings.append(Setting(("zero_force_ds_cpu_optimizer",), False))
    return settings, device


def _refuse_unused(arguments: DeepSpeedArguments, names: tuple[str, ...], reason: str) -> None:
    given = [f"{name}={arguments.value(name)!r}" for name in names if arguments.value(name) is not None]
    if given:
        raise DeepSpeedConfigError(f"DeepSpeedStrategy({', '.join(given)}) has no effect: {reason}.")


def resolve_aio(arguments: DeepSpeedArguments) -> list[Setting]:
    """The ``aio`` section (asynchronous I/O of NVMe offload), from the arguments that were given.

    DeepSpeed's own defaults are the documented defaults of these arguments, so only the
    given ones are written.
    """
    return [
        Setting(("aio", name), arguments.value(name), arguments.source(name))
        for name in _AIO
        if arguments.value(name) is not None
    ]


def resolve_extras(arguments: DeepSpeedArguments) -> list[Setting]:
    """The settings of the further keyword arguments, at the paths of `EXTRA_SETTINGS`."""
    return [
        Setting(path, arguments.extras[name], arguments.source(name))
        for name, path in EXTRA_SETTINGS.items()
        if arguments.extras.get(name) is not None
    ]


def resolve_precision(precision: str, source: str | None) -> list[Setting]:
    """The ``fp16`` / ``bf16`` sections for a precision string.

    ``source`` says where the precision came from (``"Fabric(precision='bf16-mixed')"``);
    ``None`` means it is only the default ``"32-true"``, and then the user config decides
    (see `precision_from_config`).
    """
    if source is None:
        return []
    half = {"bf16": precision.startswith("bf16"), "fp16": precision.startswith("16")}
    return [Setting((section, "enabled"), enabled, source) for section, enabled in half.items()]


def resolve_defaults(user: Mapping[str, Any]) -> list[Setting]:
    """What fabric sets unless the user config says otherwise.

    - ``gradient_clipping: 0.0``: the loop clips only if it asks to (DeepSpeed's own
      default would clip every step at norm 1.0, unlike any other strategy).
    - ``zero_allow_untested_optimizer: true``: any torch optimizer may be used.
    - ``train_micro_batch_size_per_gpu: 1`` when the config names neither it nor
      ``train_batch_size``: DeepSpeed requires one of them, and uses it only for its
      throughput logs since fabric's loop feeds the batches.
    """
    settings = [Setting(("gradient_clipping",), 0.0), Setting(("zero_allow_untested_optimizer",), True)]
    if not _present(user, ("train_batch_size",)) and not _present(user, ("train_micro_batch_size_per_gpu",)):
        settings.append(Setting(("train_micro_batch_size_per_gpu",), 1))
    return settings


# -- merge and validate --------------------------------------------------------------


def merge_settings(user: Mapping[str, Any], settings: list[Setting]) -> dict[str, Any]:
    """Write ``settings`` into a copy of ``user``; settings with a source go first, then defaults.

    A value of ``"auto"`` in the user config counts as absent.

    Raises:
        DeepSpeedConfigError: A setting with a source disagrees with the value already at its
            path; the message names both values and where each came from.
    """
    config = copy.deepcopy(dict(user))
    origins: dict[tuple[str, ...], str] = {}
    ordered = [s for s in settings if s.source is not None] + [s for s in settings if s.source is None]
    for setting in ordered:
        parent = _parent(config, setting.path)
        key = setting.path[-1]
        if key not in parent or parent[key] == AUTO:
            parent[key] = setting.value
            origins[setting.path] = setting.source or "a default"
            continue
        existing = parent[key]
        if existing == setting.value or setting.source is None:
            continue
        dotted = ".".join(setting.path)
        origin = origins.get(setting.path, _USER_CONFIG)
        raise DeepSpeedConfigError(
            f"{setting.source} asks for {dotted} = {setting.value!r}, but {origin} sets {dotted} = {existing!r}. "
            "Remove one of them or make them agree."
        )
    return config


def validate_config(config: Mapping[str, Any], arguments: DeepSpeedArguments, final: bool = True) -> None:
    """Check what DeepSpeed would reject later, or silently misread, in plain words.

    ``final=False`` (a config built before Fabric gave the precision) tolerates ``"auto"``.

    Raises:
        DeepSpeedConfigError: A value of the wrong type (see `check_types`), an invalid
            stage, offloading the stage cannot do, float16 and bfloat16 both enabled, float16
            loss-scale arguments without float16, or ``"auto"`` values fabric does not fill.
    """
    check_types(config)
    stage = _lookup(config, ("zero_optimization", "stage"))
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise DeepSpeedConfigError(
            f"zero_optimization.stage = {stage!r} is not a ZeRO stage; use 0, 1, 2 or 3."
        )
    if _offloads(config, "offload_param") and stage != 3:
        raise DeepSpeedConfigError(
            f"Parameter offload (zero_optimization.offload_param) needs ZeRO stage 3, but the stage is {stage}. "
            "Use stage=3 (strategy='deepspeed_stage_3_offload'), or offload only the optimizer."
        )
    if _offloads(config, "offload_optimizer") and stage == 0:
        raise DeepSpeedConfigError(
            "Optimizer offload (zero_optimization.offload_optimizer) needs ZeRO stage 1, 2 or 3, but the stage is 0."
        )
    if is_enabled(config, "fp16") and is_enabled(config, "bf16"):
        raise DeepSpeedConfigError("The DeepSpeed config enables both fp16 and bf16; enable one of them.")
    float16_only = [name for name in _FLOAT16_ONLY if arguments.extras.get(name) is not None]
    if float16_only and not is_enabled(config, "fp16"):
        raise DeepSpeedConfigError(
            f"DeepSpeedStrategy({', '.join(float16_only)}=...) tunes float16 loss scaling, which runs only with "
            "Fabric(precision='16-mixed') on a GPU."
        )
    auto = [".".join(path) for path, value in _leaves(config) if value == AUTO]
    if auto and final:
        raise DeepSpeedConfigError(
            f"The DeepSpeed config holds 'auto' at {', '.join(auto)}. fabric fills 'auto' only where it sets a "
            "value itself (batch size, ZeRO stage, offload, and fp16/bf16 when Fabric(precision=...) is given); "
            "write the values you want there."
        )


def check_types(config: Mapping[str, Any]) -> None:
    """Refuse values of the wrong type in the entries fabric and DeepSpeed read plainly.

    DeepSpeed reads the top-level numbers and switches as they are (a string batch size
    fails deep in the engine, a string ``enabled`` turns half precision on for DeepSpeed
    but not for fabric's casts) and ignores a top-level key it does not know, so a typo of a
    section name silently drops the section. ``"auto"`` is left to `validate_config`.
    The other entries of the sections are DeepSpeed's to check (its pydantic models).

    Raises:
        DeepSpeedConfigError: A section that is not a dict, a count, number or switch of the
            wrong type, an ``enabled`` that is not a bool, an offload device that is not
            ``cpu``/``nvme``/``none``, or a top-level key close to a known one.
    """
    for dotted in SECTIONS:
        value = _lookup(config, tuple(dotted.split(".")))
        if value is not None and value != AUTO and not isinstance(value, Mapping):
            example = ' {"device": "cpu"}' if dotted.startswith("zero_optimization.offload") else " {...}"
            _wrong(dotted, value, f"a section (a dict such as{example})")
    for name in _POSITIVE_INTEGERS:
        value = config.get(name)
        if (
            value is not None
            and value != AUTO
            and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            _wrong(name, value, "a positive integer (a number without quotes)")
    for name in _NUMBERS:
        value = config.get(name)
        if (
            value is not None
            and value != AUTO
            and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0)
        ):
            _wrong(name, value, "a number >= 0 (without quotes)")
    for name in _FLAGS:
        value = config.get(name)
        if value is not None and value != AUTO and not isinstance(value, bool):
            _wrong(name, value, "true or false (a boolean, without quotes)")
    for name, section in config.items():
        switch = section.get("enabled", AUTO) if isinstance(section, Mapping) else AUTO
        if switch != AUTO and not isinstance(switch, bool):
            _wrong(f"{name}.enabled", switch, "true or false (a boolean, without quotes)")
    for name in ("offload_optimizer", "offload_param"):
        device = _lookup(config, ("zero_optimization", name, "device"))
        if device is not None and device not in _OFFLOAD_DEVICES:
            _wrong(f"zero_optimization.{name}.device", device, "'cpu', 'nvme' or 'none'")
    for name in config:
        if name not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(name, TOP_LEVEL_KEYS, n=1, cutoff=0.8)
            if close:
                raise DeepSpeedConfigError(
                    f"The DeepSpeed config has the key {name!r}, which DeepSpeed does not read: it would be ignored. "
                    f"Did you mean {close[0]!r}?"
                )


def _wrong(dotted: str, value: Any, expected: str) -> None:
    raise DeepSpeedConfigError(
        f"The DeepSpeed config has {dotted} = {value!r}, but it must be {expected}. Fix it in DeepSpeedStrategy(config=...)."
    )


def _check_keys(config: Mapping[Any, Any], prefix: str = "") -> None:
    """Refuse keys that are not strings: a JSON config has none, and DeepSpeed would ignore or choke on them."""
    for key, value in config.items():
        if not isinstance(key, str):
            where = f"in the section {prefix[:-1]}" if prefix else "at the top"
            raise DeepSpeedConfigError(
                f"The DeepSpeed config has the key {key!r} ({type(key).__name__}) {where}, but every key must be a "
                f"string naming a DeepSpeed setting (write {str(key)!r} if that is meant)."
            )
        if isinstance(value, Mapping):
            _check_keys(value, f"{prefix}{key}.")


def build_config(
    arguments: DeepSpeedArguments,
    user: Mapping[str, Any],
    precision: str,
    precision_source: str | None,
    final: bool = True,
) -> dict[str, Any]:
    """The DeepSpeed config for a run.

    Args:
        arguments: The strategy's config-shaping arguments.
        user: The user config (see `load_user_config`).
        precision: The precision string of the run.
        precision_source: Where the precision came from, ``None`` when it is only the default.
        final: Whether the precision is final (see `validate_config`).

    Raises:
        DeepSpeedConfigError: Two places disagree, or the result is not a valid config.
    """
    settings = [
        *resolve_zero(arguments),
        *resolve_offload(arguments, user),
        *resolve_aio(arguments),
        *resolve_extras(arguments),
        *resolve_precision(precision, precision_source),
        *resolve_defaults(user),
    ]
    config = merge_settings(user, settings)
    validate_config(config, arguments, final)
    return config


def precision_from_config(config: Mapping[str, Any]) -> str | None:
    """The precision string a config enables (``"16-mixed"``, ``"bf16-mixed"``), ``None`` for float32."""
    if is_enabled(config, "fp16"):
        return "16-mixed"
    if is_enabled(config, "bf16"):
        return "bf16-mixed"
    return None


def is_enabled(config: Mapping[str, Any], section: str) -> bool:
    """Whether ``config[section]["enabled"]`` is true."""
    return _lookup(config, (section, "enabled")) is True


def zero_stage(config: Mapping[str, Any]) -> int:
    """The ZeRO stage of a built config."""
    return int(_lookup(config, ("zero_optimization", "stage")) or 0)


# -- helpers ---------------------------------------------------------------------------


def _lookup(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _present(config: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    return _lookup(config, path) not in (None, AUTO)


def _offloads(config: Mapping[str, Any], section: str) -> bool:
    return _lookup(config, ("zero_optimization", section, "device")) not in (None, "none")


def _parent(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = config
    for depth, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            dotted = ".".join(path[: depth + 1])
            raise DeepSpeedConfigError(
                f"The DeepSpeed config has {dotted} = {child!r}, but it must be a section (a dict) holding "
                f"{'.'.join(path[depth + 1 :])}."
            )
        node = child
    return node


def _leaves(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value
