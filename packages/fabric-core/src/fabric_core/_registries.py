"""The global registries. Importing this module imports neither torch nor any plugin."""

from __future__ import annotations

from typing import Final

from fabric_core._first_party import ACCELERATOR_PROVIDERS, ENVIRONMENT_PROVIDERS, STRATEGY_PROVIDERS
from fabric_core.registry import Registry


class StrategyRegistry(Registry):
    """Maps strategy names (``"ddp"``, ``"fsdp"``, ...) to strategy classes.

    Plugins fill it through the ``fabric_register_strategies`` hook; code that is not
    packaged registers directly::

        STRATEGY_REGISTRY.register("custom", CustomStrategy, description="...", some_arg=1)
    """

    def __init__(self) -> None:
        super().__init__("strategy", "strategies", hints=STRATEGY_PROVIDERS)

    def available_strategies(self) -> list[str]:
        """The registered strategy names."""
        return self.available()


class AcceleratorRegistry(Registry):
    """Maps accelerator names (``"cpu"``, ``"cuda"``, ...) to accelerator classes."""

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
