"""Strategies: how a training loop runs across devices, processes and nodes.

``fabric-core`` ships :class:`SingleDeviceStrategy` (``"single_device"``) and
:class:`DataParallelStrategy` (``"dp"``). Plugin distributions add the rest through the
``fabric`` entry-point group; ``STRATEGY_REGISTRY`` lists everything installed.
"""

from fabric_core._registries import STRATEGY_REGISTRY, StrategyRegistry
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
