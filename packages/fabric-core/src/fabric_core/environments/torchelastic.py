"""The environment of processes started by ``torchrun`` (the torch elastic agent)."""

from __future__ import annotations

import os

from fabric_core.environments._exported import ExportedRanksEnvironment
from fabric_core.environments._variables import read_int

_REQUIRED = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")


class TorchElasticEnvironment(ExportedRanksEnvironment):
    """Reads what the torch elastic agent exports to each worker (``RANK``, ``WORLD_SIZE``, ...)."""

    detection_priority = 10

    @staticmethod
    def detect() -> bool:
        """True when every variable the elastic agent sets is present."""
        return all(name in os.environ for name in _REQUIRED)

    def local_rank(self) -> int:
        """``LOCAL_RANK``."""
        return read_int("LOCAL_RANK")

    def node_rank(self) -> int:
        """``GROUP_RANK``: the agent's node index."""
        return read_int("GROUP_RANK")

    def processes_per_node(self) -> int:
        """``LOCAL_WORLD_SIZE``: the workers the agent started on this node."""
        return read_int("LOCAL_WORLD_SIZE")

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Check ``devices`` against ``LOCAL_WORLD_SIZE`` and the node count against the world size.

        Raises:
            ValueError: The numbers passed to Fabric disagree with what torchrun started.
        """
        local_world_size = self.processes_per_node()
        if num_devices != local_world_size:
            raise ValueError(
                f"torchrun started {local_world_size} process(es) per node (--nproc-per-node), but "
                f"Fabric(devices={num_devices}) was given. Make the two agree."
            )
        if num_devices * num_nodes != self.world_size():
            raise ValueError(
                f"torchrun started {self.world_size()} process(es) in all, but Fabric(devices={num_devices}, "
                f"num_nodes={num_nodes}) implies {num_devices * num_nodes}. Make --nnodes and num_nodes agree."
            )
