"""Strategies: how a training loop runs across devices, processes and nodes.

``fabric-core`` ships `SingleDeviceStrategy` (``"single_device"``) and
`DataParallelStrategy` (``"dp"``). Plugin distributions add the rest through the
``fabric`` entry-point group; ``STRATEGY_REGISTRY`` lists everything installed.

The first-party plugins' classes can be imported from here too, as from
``lightning.fabric.strategies`` (``from fabric_core.strategies import DDPStrategy``); each is
imported from its distribution on first access, and a missing distribution is named.
"""

from fabric_core._registries import STRATEGY_REGISTRY, StrategyRegistry
from fabric_core.lazy import lazy_exports
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.dp import DataParallelStrategy
from fabric_core.strategies.parallel import ParallelStrategy
from fabric_core.strategies.single_device import SingleDeviceStrategy
from fabric_core.strategies.strategy import Strategy

__all__ = [
    "STRATEGY_REGISTRY",
    "DataParallelStrategy",
    "ParallelStrategy",
    "SingleDeviceStrategy",
    "Strategy",
    "StrategyConfig",
    "StrategyRegistry",
]

_PLUGIN_CLASSES = {
    "DDPStrategy": ("fabric_ddp", "fabric-ddp"),
    "FSDPStrategy": ("fabric_fsdp", "fabric-fsdp"),
    "ModelParallelStrategy": ("fabric_fsdp", "fabric-fsdp"),
    "DeepSpeedStrategy": ("fabric_deepspeed", "fabric-deepspeed"),
    "XLAStrategy": ("fabric_xla", "fabric-xla"),
    "SingleDeviceXLAStrategy": ("fabric_xla", "fabric-xla"),
    "XLAFSDPStrategy": ("fabric_xla", "fabric-xla"),
}
__getattr__, __dir__ = lazy_exports(
    __name__,
    {name: module for name, (module, _) in _PLUGIN_CLASSES.items()},
    {name: distribution for name, (_, distribution) in _PLUGIN_CLASSES.items()},
)
