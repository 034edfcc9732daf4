"""The cluster environment interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class ClusterEnvironment(ABC):
    """Tells a process its place in the job: ranks, world size, and where rank 0 listens.

    Subclasses are registered by name in ``ENVIRONMENT_REGISTRY``. Automatic detection
    asks each registered class's `detect` in ascending ``detection_priority`` and
    uses the first that answers yes.
    """

    detection_priority: ClassVar[int] = 100

    @staticmethod
    @abstractmethod
    def detect() -> bool:
        """Whether the current process runs in this environment (reads environment variables only)."""

    @property
    @abstractmethod
    def creates_processes_externally(self) -> bool:
        """True when something else (torchrun, srun, mpirun) started every process."""

    @property
    @abstractmethod
    def main_address(self) -> str:
        """The address of the rank-0 process, used to form the process group."""

    @property
    @abstractmethod
    def main_port(self) -> int:
        """The port the rank-0 process listens on."""

    @abstractmethod
    def world_size(self) -> int:
        """The total number of processes."""

    @abstractmethod
    def global_rank(self) -> int:
        """This process's rank among all processes."""

    @abstractmethod
    def local_rank(self) -> int:
        """This process's rank on its node."""

    @abstractmethod
    def node_rank(self) -> int:
        """The rank of this process's node."""

    def processes_per_node(self) -> int | None:
        """How many processes the environment started on each node, when it knows.

        ``Fabric`` uses it as the default for ``devices`` when the processes were started
        externally, so a script need not repeat ``--nproc-per-node``.
        """
        return None

    def set_world_size(self, size: int) -> None:
        """Record the world size the strategy computed (ignored where the environment knows it)."""

    def set_global_rank(self, rank: int) -> None:
        """Record the global rank the strategy computed (ignored where the environment knows it)."""

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise a clear error when ``devices``/``num_nodes`` contradict what the environment says."""

    def teardown(self) -> None:
        """Undo changes to the process environment."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
