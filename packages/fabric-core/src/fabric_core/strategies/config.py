"""What the connector resolved, handed to a strategy in one piece."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision


@dataclass(frozen=True)
class StrategyConfig:
    """The resolved settings of a ``Fabric(...)`` call, passed to `Strategy.configure`.

    A strategy takes what it needs and raises a clear error for what it cannot honour,
    so the connector never inspects concrete strategy types.

    Attributes:
        accelerator: The resolved accelerator.
        parallel_devices: One device per process on this node.
        num_nodes: The number of nodes.
        cluster_environment: The detected (or given) cluster environment.
        precision: The precision string (``"bf16-mixed"``), already validated.
        precision_plugin: A precision plugin passed in ``plugins=``, if any.
        checkpoint_io: A checkpoint I/O passed in ``plugins=``, if any.
        explicit: The ``Fabric`` arguments the user set, for conflict messages
            (e.g. ``{"devices": 2}``).
    """

    accelerator: Accelerator
    parallel_devices: list[torch.device]
    num_nodes: int
    cluster_environment: ClusterEnvironment
    precision: str
    precision_plugin: Precision | None = None
    checkpoint_io: CheckpointIO | None = None
    explicit: dict[str, object] | None = None

    def given(self, name: str) -> bool:
        """Whether the user set the ``Fabric`` argument ``name`` explicitly."""
        return bool(self.explicit) and name in self.explicit  # type: ignore[operator]
