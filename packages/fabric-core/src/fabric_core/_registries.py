"""The global registries and the plugin loader that fills them.

Where a name such as ``"ddp"`` comes from: `PLUGIN_LOADER` finds the ``fabric``
entry point of fabric-ddp, whose ``fabric_register_strategies`` hook registers it into
`STRATEGY_REGISTRY`; ``Fabric(strategy="ddp")`` builds it from there. Importing this
module imports neither torch, nor pluggy, nor any plugin: discovery runs on first lookup.
"""

from __future__ import annotations

from typing import Any, Final

from fabric_core._discovery import PluginLoader
from fabric_core._first_party import ACCELERATOR_PROVIDERS, ENVIRONMENT_PROVIDERS, STRATEGY_PROVIDERS
from fabric_core.registry import Registry


class StrategyRegistry(Registry):
    """Maps strategy names (``"ddp"``, ``"fsdp"``, ...) to strategy classes.

    Plugins fill it through the ``fabric_register_strategies`` hook; code that is not
    packaged registers directly::

        STRATEGY_REGISTRY.register("custom", CustomStrategy, description="...", some_arg=1)
        STRATEGY_REGISTRY.get("custom")      # the class
        STRATEGY_REGISTRY.build("custom")    # CustomStrategy(some_arg=1)
    """

    base_class = "fabric_core.strategies.strategy:Strategy"

    def __init__(self) -> None:
        super().__init__("strategy", "strategies", hints=STRATEGY_PROVIDERS)

    def register(  # type: ignore[override]
        self,
        name: str,
        strategy_class: type | str | None = None,
        description: str | None = None,
        *,
        override: bool = False,
        requires: tuple[str, ...] = (),
        **init_params: Any,
    ) -> Any:
        """Register ``name`` for a `Strategy` subclass or a ``"module:Class"`` path.

        Without ``strategy_class`` it returns a class decorator. The other arguments are
        those of `Registry.register`; ``**init_params`` are passed to the class when
        the name is built with `build` or ``Fabric(strategy=name)``.

        Raises:
            TypeError: ``strategy_class`` is not a ``Strategy`` subclass (or a path).
            DuplicateNameError: ``name`` is taken (by a plugin, too) and ``override`` is false.
        """
        return super().register(
            name, strategy_class, description, override=override, requires=requires, **init_params
        )

    def available_strategies(self) -> list[str]:
        """The registered strategy names."""
        return self.available()


class AcceleratorRegistry(Registry):
    """Maps accelerator names (``"cpu"``, ``"cuda"``, ...) to accelerator classes."""

    base_class = "fabric_core.accelerators.accelerator:Accelerator"

    def __init__(self) -> None:
        super().__init__("accelerator", "accelerators", hints=ACCELERATOR_PROVIDERS)

    def available_accelerators(self) -> list[str]:
        """The registered accelerator names."""
        return self.available()


class EnvironmentRegistry(Registry):
    """Maps cluster environment names (``"slurm"``, ``"torchelastic"``, ...) to classes."""

    def __init__(self) -> None:
        super().__init__("cluster environment", "cluster environments", hints=ENVIRONMENT_PROVIDERS)


class PrecisionRegistry(Registry):
    """Maps precision strings (``"bf16-mixed"``, ...) to precision plugin classes."""

    def __init__(self) -> None:
        super().__init__("precision", "precisions")


class CheckpointFormatRegistry(Registry):
    """Maps checkpoint format names (``"dcp"``, ``"deepspeed"``, ...) to format classes."""

    def __init__(self) -> None:
        super().__init__("checkpoint format", "checkpoint formats", hints={"deepspeed": "fabric-deepspeed"})


STRATEGY_REGISTRY: Final = StrategyRegistry()
ACCELERATOR_REGISTRY: Final = AcceleratorRegistry()
ENVIRONMENT_REGISTRY: Final = EnvironmentRegistry()
PRECISION_REGISTRY: Final = PrecisionRegistry()
CHECKPOINT_FORMAT_REGISTRY: Final = CheckpointFormatRegistry()

ALL_REGISTRIES: Final = {
    "fabric_register_strategies": STRATEGY_REGISTRY,
    "fabric_register_accelerators": ACCELERATOR_REGISTRY,
    "fabric_register_environments": ENVIRONMENT_REGISTRY,
    "fabric_register_precisions": PRECISION_REGISTRY,
    "fabric_register_checkpoint_formats": CHECKPOINT_FORMAT_REGISTRY,
}
"""Each registration hook and the registry it fills."""

PLUGIN_LOADER: Final = PluginLoader(ALL_REGISTRIES)
"""Discovers the installed plugins the first time any of `ALL_REGISTRIES` is asked for a name."""
