"""From ``Fabric(...)`` arguments to one configured strategy.

The connector is a chain of small steps, each documented and tested on its own:

1. `resolve_plugins` sorts ``plugins=[...]`` into precision, checkpoint I/O and
   cluster environment.
2. `resolve_accelerator` turns ``accelerator`` into an `Accelerator`.
3. `resolve_devices` turns ``devices`` into one ``torch.device`` per local process.
4. `resolve_num_nodes` validates ``num_nodes``.
5. `resolve_precision` normalises the precision string, and
   `resolve_device_precision` adapts it to the device (``16-mixed`` on a CPU).
6. `resolve_strategy` turns ``strategy`` into a `Strategy` instance.
7. `Strategy.configure` hands the result to the strategy, which refuses what it
   cannot honour. The connector never inspects concrete strategy types.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch

from fabric_core._registries import ACCELERATOR_REGISTRY, PRECISION_REGISTRY, STRATEGY_REGISTRY
from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.environments.detect import detect_environment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launch_variables import LAUNCHER_VARIABLES
from fabric_core.launchers.worker_exit import under_elastic_agent
from fabric_core.precision.precision import Precision
from fabric_core.registry import UnknownNameError
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy
from fabric_core.utilities.device_parser import parse_devices
from fabric_core.utilities.rank_zero import global_rank_from_environment

__all__ = [
    "LEGACY_PRECISION",
    "ResolvedPlugins",
    "connect",
    "resolve_accelerator",
    "resolve_device_precision",
    "resolve_devices",
    "resolve_num_nodes",
    "resolve_plugins",
    "resolve_precision",
    "resolve_strategy",
]

LEGACY_PRECISION: Final[dict[object, str]] = {
    32: "32-true",
    "32": "32-true",
    64: "64-true",
    "64": "64-true",
    16: "16-mixed",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
}
"""Old precision spellings and the strings that replace them."""

PRECISION_HINTS: Final[dict[str, str]] = {
    "fp16": "'16-mixed' (float16 autocast) or '16-true' (float16 weights)",
    "float16": "'16-mixed' (float16 autocast) or '16-true' (float16 weights)",
    "half": "'16-mixed' (float16 autocast) or '16-true' (float16 weights)",
    "mixed": "'16-mixed' or 'bf16-mixed'",
    "amp": "'16-mixed' or 'bf16-mixed'",
    "bfloat16": "'bf16-mixed' (bfloat16 autocast) or 'bf16-true' (bfloat16 weights)",
    "fp32": "'32-true'",
    "float32": "'32-true'",
    "float": "'32-true'",
    "fp64": "'64-true'",
    "float64": "'64-true'",
    "double": "'64-true'",
}
"""Names of dtypes and techniques that users pass as a precision, and the precision strings they mean."""

DEFAULT_PRECISION: Final = "32-true"
MULTI_PROCESS_STRATEGY: Final = "ddp"


@dataclass(frozen=True)
class ResolvedPlugins:
    """The objects of ``plugins=[...]``, sorted by kind."""

    precision: Precision | None = None
    checkpoint_io: CheckpointIO | None = None
    cluster_environment: ClusterEnvironment | None = None


def resolve_plugins(plugins: Any) -> ResolvedPlugins:
    """Sort ``plugins`` (one object or a list) into at most one of each kind.

    Raises:
        TypeError: An object is of no known kind, or a kind appears twice.
    """
    if plugins is None:
        return ResolvedPlugins()
    items = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    found: dict[str, Any] = {}
    kinds = (
        ("precision", Precision),
        ("checkpoint_io", CheckpointIO),
        ("cluster_environment", ClusterEnvironment),
    )
    for item in items:
        for kind, base in kinds:
            if isinstance(item, base):
                if kind in found:
                    raise TypeError(
                        f"plugins= holds two {base.__name__} objects ({found[kind]!r} and {item!r}); pass one."
                    )
                found[kind] = item
                break
        else:
            raise TypeError(
                f"plugins= got {item!r}, which is not a Precision, CheckpointIO or ClusterEnvironment. "
                "Pass strategies with strategy= and accelerators with accelerator=."
            )
    return ResolvedPlugins(**found)


def resolve_accelerator(accelerator: str | Accelerator, strategy_default: str | None = None) -> Accelerator:
    """The accelerator for ``Fabric(accelerator=...)``.

    ``"auto"`` takes the strategy's preferred accelerator when it has one, else the
    available registered accelerator with the lowest ``auto_priority`` (CUDA, then MPS,
    then the CPU).

    Raises:
        UnknownNameError: No accelerator has that name (the message lists them).
        RuntimeError: The accelerator exists but this machine has no such device.
        TypeError: ``accelerator`` is neither a string nor an ``Accelerator``.
    """
    if isinstance(accelerator, Accelerator):
        return accelerator
    if not isinstance(accelerator, str):
        raise TypeError(
            f"accelerator={accelerator!r} must be a name ('cpu', 'cuda', 'auto', ...) or an Accelerator instance."
            + _instance_hint(accelerator, Accelerator, "accelerator")
        )
    name = accelerator.lower()
    if name == "auto":
        if strategy_default is not None:
            return _available_accelerator(
                strategy_default, f"The strategy runs on accelerator='{strategy_default}'"
            )
        candidates = []
        for entry in ACCELERATOR_REGISTRY.entries():
            cls = ACCELERATOR_REGISTRY.get_class(entry.name)
            if cls.auto_priority is not None:
                candidates.append((cls.auto_priority, entry.name, cls))
        for _, candidate, cls in sorted(candidates, key=lambda c: c[0]):
            if cls.is_available():
                return ACCELERATOR_REGISTRY.build(candidate)
        return ACCELERATOR_REGISTRY.build("cpu")
    return _available_accelerator(name, f"Fabric(accelerator='{accelerator}') was requested")


def _available_accelerator(name: str, subject: str) -> Accelerator:
    cls = ACCELERATOR_REGISTRY.get(name)
    if not cls.is_available():
        reason = cls.unavailable_reason().rstrip(".")
        if reason[:2].istitle():  # "No XLA device ..." continues the sentence as "no XLA device ..."
            reason = reason[0].lower() + reason[1:]
        hint = (
            ""
            if "accelerator='cpu'" in reason
            else " Use accelerator='cpu', or 'auto' to pick what is available."
        )
        raise RuntimeError(f"{subject}, but {reason}.{hint}")
    return ACCELERATOR_REGISTRY.build(name)


def resolve_devices(devices: int | str | Sequence[int], accelerator: Accelerator) -> list[torch.device]:
    """One device per process on this node, for ``Fabric(devices=...)``.

    Raises:
        ValueError: ``devices`` is malformed (0, -3, "abc", ...) or asks for more devices
            than the machine has.
    """
    return accelerator.parallel_devices(parse_devices(devices))


def resolve_num_nodes(num_nodes: int) -> int:
    """Validate ``Fabric(num_nodes=...)``.

    Raises:
        ValueError: ``num_nodes`` is not a positive integer.
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(
            f"num_nodes={num_nodes!r} is not valid: pass the number of machines, an integer >= 1."
        )
    return num_nodes


def resolve_precision(precision: str | int | None) -> str:
    """The precision string for ``Fabric(precision=...)`` (``"32-true"`` when ``None``).

    Legacy spellings (``32``, ``16``, ``"bf16"``, ...) are translated with a warning.

    Raises:
        ValueError: The precision is not registered (the message lists the valid ones and
            names the one meant, for a dtype name such as ``"fp16"`` or a near miss).
    """
    if precision is None:
        return DEFAULT_PRECISION
    if (
        isinstance(precision, (int, str))
        and not isinstance(precision, bool)
        and precision in LEGACY_PRECISION
    ):
        replacement = LEGACY_PRECISION[precision]
        warnings.warn(
            f"precision={precision!r} is a legacy spelling; use precision='{replacement}' instead.",
            DeprecationWarning,
            stacklevel=4,
        )
        return replacement
    if isinstance(precision, str) and precision in PRECISION_REGISTRY:
        return precision
    available = PRECISION_REGISTRY.available()
    raise ValueError(
        f"precision={precision!r} is not supported. Choose one of: {', '.join(available)}."
        + _precision_hint(precision, available)
    )


def _precision_hint(precision: object, available: list[str]) -> str:
    text = str(precision).strip().lower()
    if isinstance(precision, float) and precision.is_integer():
        text = str(int(precision))
    if text in PRECISION_HINTS:
        return f" For {precision!r} pass {PRECISION_HINTS[text]}."
    if text in LEGACY_PRECISION and not isinstance(precision, str):
        return f" Did you mean '{LEGACY_PRECISION[text]}'?"
    close = difflib.get_close_matches(text, available, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _instance_hint(value: object, base: type, argument: str) -> str:
    """`` Pass an instance: ...`` when ``value`` is a subclass of ``base`` given instead of an instance of it."""
    if isinstance(value, type) and issubclass(value, base):
        return f" {value.__name__} is a class; pass an instance of it: {argument}={value.__name__}(...)."
    return ""


def resolve_device_precision(precision: str, accelerator: Accelerator) -> str:
    """The precision the device can run: ``"16-mixed"`` on a CPU becomes ``"bf16-mixed"``, with a warning.

    float16 autocast with gradient scaling is a GPU technique; on a CPU, bfloat16 autocast
    is the mixed precision that is fast and needs no scaler (Lightning Fabric resolves it
    the same way). A ``MixedPrecision("16-mixed", "cpu")`` plugin still gets float16.
    """
    if precision == "16-mixed" and accelerator.device_type == "cpu":
        warnings.warn(
            "Fabric(precision='16-mixed') on the CPU runs as precision='bf16-mixed': float16 mixed precision "
            "is for GPUs. Pass precision='bf16-mixed' to silence this, or plugins=MixedPrecision('16-mixed', "
            "'cpu') to insist on float16.",
            UserWarning,
            stacklevel=4,
        )
        return "bf16-mixed"
    return precision


def resolve_strategy(
    strategy: str | Strategy, total_processes: int, accelerator: Accelerator | None = None
) -> Strategy:
    """The strategy for ``Fabric(strategy=...)``.

    ``"auto"`` is the accelerator's choice (`Accelerator.auto_strategy`) when it
    makes one, else ``"single_device"`` for one process and ``"ddp"`` for more.

    Raises:
        UnknownNameError: No strategy has that name; the message lists the names and, for
            a first-party name, the distribution to install.
        TypeError: ``strategy`` is neither a name nor a ``Strategy``.
    """
    if isinstance(strategy, Strategy):
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy={strategy!r} must be a strategy name ('ddp', 'fsdp', ...) or a Strategy instance."
            + _instance_hint(strategy, Strategy, "strategy")
        )
    if strategy != "auto":
        return STRATEGY_REGISTRY.build(strategy)
    preferred = accelerator.auto_strategy(total_processes) if accelerator is not None else None
    if preferred is not None:
        return STRATEGY_REGISTRY.build(preferred)
    if total_processes == 1:
        return STRATEGY_REGISTRY.build("single_device")
    try:
        return STRATEGY_REGISTRY.build(MULTI_PROCESS_STRATEGY)
    except UnknownNameError as error:
        raise UnknownNameError(
            f"{total_processes} processes need a multi-process strategy, and strategy='auto' picks "
            f"'{MULTI_PROCESS_STRATEGY}'. {error}"
        ) from None


def connect(
    accelerator: str | Accelerator = "auto",
    strategy: str | Strategy = "auto",
    devices: int | str | Sequence[int] = "auto",
    num_nodes: int = 1,
    precision: str | int | None = None,
    plugins: Any = None,
    explicit: dict[str, object] | None = None,
) -> Strategy:
    """Run every resolution step and return the configured strategy.

    Args:
        accelerator: As ``Fabric(accelerator=...)``.
        strategy: As ``Fabric(strategy=...)``.
        devices: As ``Fabric(devices=...)``.
        num_nodes: As ``Fabric(num_nodes=...)``.
        precision: As ``Fabric(precision=...)``.
        plugins: As ``Fabric(plugins=...)``.
        explicit: The arguments the user set explicitly, used to detect conflicts with a
            strategy instance.
    """
    resolved_plugins = resolve_plugins(plugins)
    if resolved_plugins.precision is not None and precision is not None:
        raise ValueError(
            f"Fabric(precision={precision!r}) was combined with the precision plugin {resolved_plugins.precision!r} "
            "in plugins=[...]. Pass one of them."
        )
    if isinstance(strategy, Strategy) and strategy.given_accelerator is not None:
        if accelerator == "auto":
            accelerator = strategy.given_accelerator
        else:
            _check_same_accelerator(strategy.given_accelerator, accelerator)
    strategy_default = _default_accelerator_of(strategy)
    accelerator_obj = resolve_accelerator(accelerator, strategy_default)
    environment = resolved_plugins.cluster_environment or detect_environment()
    devices, num_nodes = _sizes_from_environment(environment, devices, num_nodes, explicit or {})
    parallel_devices = resolve_devices(devices, accelerator_obj)
    nodes = resolve_num_nodes(num_nodes)
    precision_name = resolve_device_precision(resolve_precision(precision), accelerator_obj)
    strategy_obj = resolve_strategy(strategy, len(parallel_devices) * nodes, accelerator_obj)
    strategy_obj.configure(
        StrategyConfig(
            accelerator=accelerator_obj,
            parallel_devices=parallel_devices,
            num_nodes=nodes,
            cluster_environment=environment,
            precision=precision_name,
            precision_plugin=resolved_plugins.precision,
            checkpoint_io=resolved_plugins.checkpoint_io,
            explicit=dict(explicit or {}),
        )
    )
    return strategy_obj


def apply_launcher_settings(arguments: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    """Merge the settings ``fabric run`` passed to the script (``FABRIC_*`` variables) into the arguments.

    A setting given on the command line fills the argument the script left at its default;
    one that contradicts a value written in the script is an error rather than a silent choice.

    Under ``fabric run`` every worker finds the same disagreement: global rank 0 prints it
    once, without a traceback, and every worker exits with status 2 (a usage error, as
    for a bad command line).

    Raises:
        ValueError: The command line and the script disagree on a setting (outside the
            elastic agent; under it, ``SystemExit(2)`` after the message).
    """
    merged = dict(arguments)
    conflicts = []
    for name, variable in LAUNCHER_VARIABLES.items():
        value = os.environ.get(variable)
        if value is None:
            continue
        if name in explicit and not _same_setting(explicit[name], value):
            conflicts.append(
                f"`fabric run --{name.replace('_', '-')} {value}` conflicts with Fabric({name}={explicit[name]!r})"
            )
        merged[name] = int(value) if name == "num_nodes" else value
    if conflicts:
        message = f"{'; '.join(conflicts)} in the script. Remove one of them."
        if not under_elastic_agent():
            raise ValueError(message)
        if global_rank_from_environment() == 0:
            print(f"fabric run: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    return merged


def _same_setting(in_code: Any, from_command_line: str) -> bool:
    if isinstance(in_code, (list, tuple)):
        return ",".join(map(str, in_code)) == from_command_line.strip(",")
    return str(in_code) == from_command_line


def _sizes_from_environment(
    environment: ClusterEnvironment, devices: Any, num_nodes: int, explicit: dict[str, Any]
) -> tuple[Any, int]:
    """Default ``devices`` and ``num_nodes`` to what an external launcher (torchrun, srun) started."""
    if not environment.creates_processes_externally:
        return devices, num_nodes
    per_node = environment.processes_per_node()
    if per_node is None:
        return devices, num_nodes
    if "devices" not in explicit:
        devices = per_node
    if "num_nodes" not in explicit and environment.world_size() % per_node == 0:
        num_nodes = environment.world_size() // per_node
    return devices, num_nodes


def _check_same_accelerator(given: Accelerator, accelerator: str | Accelerator) -> None:
    """Refuse ``Fabric(accelerator=...)`` that differs from the strategy instance's, before probing devices."""
    if isinstance(accelerator, Accelerator):
        wanted: type = type(accelerator)
    elif isinstance(accelerator, str) and accelerator.lower() in ACCELERATOR_REGISTRY:
        wanted = ACCELERATOR_REGISTRY.get_class(accelerator.lower())
    else:
        return  # resolve_accelerator explains an unknown name or a value of the wrong type
    if type(given) is not wanted:
        raise ValueError(
            f"The strategy instance was built with {given!r}, but Fabric(accelerator={accelerator!r}) asks for "
            "another. Pass the accelerator in one place only."
        )


def _default_accelerator_of(strategy: str | Strategy) -> str | None:
    if isinstance(strategy, Strategy):
        return strategy.default_accelerator
    if isinstance(strategy, str) and strategy != "auto":
        return STRATEGY_REGISTRY.get_class(strategy).default_accelerator
    return None
