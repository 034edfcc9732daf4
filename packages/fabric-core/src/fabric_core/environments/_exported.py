"""Bases of the environments whose launcher (torchrun, srun, mpirun, jsrun, Kubernetes) started every process."""

from __future__ import annotations

import os

from fabric_core.environments._variables import read_int
from fabric_core.environments.cluster_environment import ClusterEnvironment


class ExternallyStartedEnvironment(ClusterEnvironment):
    """An environment whose launcher started every process (the class docstring names the launcher)."""

    @property
    def creates_processes_externally(self) -> bool:
        """Always: the launcher started every process."""
        return True


class ExportedRanksEnvironment(ExternallyStartedEnvironment):
    """An environment whose launcher started every process and exported the torch.distributed variables.

    torchrun and the Kubeflow training operator both export ``MASTER_ADDR``, ``MASTER_PORT``,
    ``WORLD_SIZE`` and ``RANK``; subclasses add what differs (local and node ranks, detection,
    validation).
    """

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` as the launcher exported it."""
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` as the launcher exported it."""
        return read_int("MASTER_PORT")

    def world_size(self) -> int:
        """``WORLD_SIZE``: the number of processes in the job."""
        return read_int("WORLD_SIZE")

    def global_rank(self) -> int:
        """``RANK``: this process's index in the job."""
        return read_int("RANK")
