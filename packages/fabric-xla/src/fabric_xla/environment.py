"""The cluster environment of XLA processes: ranks come from the XLA runtime."""

from __future__ import annotations

from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_xla._runtime import started_by_torch_xla

__all__ = ["XLAEnvironment"]


class XLAEnvironment(ClusterEnvironment):
    """Processes of an XLA job, whose ranks the XLA (PJRT) runtime knows.

    ``torch_xla.launch`` starts one process per device on each host and the runtime
    connects them, so there is no main address or port to read, and ranks are only known
    once the runtime has started in the process. Under SPMD (``xla_spmd``) one process
    drives all the devices of its host, so ranks count processes (hosts), not devices.

    XLA strategies use this environment unless given another. Automatic detection
    recognises the workers that ``torch_xla.launch`` started (they carry
    ``PJRT_LOCAL_PROCESS_RANK``), so a ``Fabric`` built inside such a worker finds it too.
    """

    detection_priority = 5

    @staticmethod
    def detect() -> bool:
        """Whether ``torch_xla.launch`` started this process."""
        return started_by_torch_xla()

    @property
    def creates_processes_externally(self) -> bool:
        """True in the workers of ``torch_xla.launch``: the processes exist already."""
        return started_by_torch_xla()

    @property
    def main_address(self) -> str:
        """Not used: the XLA runtime connects its processes itself.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(
            "XLA processes are connected by the XLA runtime; there is no main address to read."
        )

    @property
    def main_port(self) -> int:
        """Not used: the XLA runtime connects its processes itself.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(
            "XLA processes are connected by the XLA runtime; there is no main port to read."
        )

    def world_size(self) -> int:
        """The number of processes: one per device, or one per host under SPMD."""
        import torch_xla.runtime as xr

        return int(xr.process_count() if xr.is_spmd() else xr.world_size())

    def global_rank(self) -> int:
        """This process's rank among all processes."""
        import torch_xla.runtime as xr

        return int(xr.process_index() if xr.is_spmd() else xr.global_ordinal())

    def local_rank(self) -> int:
        """This process's rank on its host (0 under SPMD)."""
        import torch_xla.runtime as xr

        return 0 if xr.is_spmd() else int(xr.local_ordinal())

    def node_rank(self) -> int:
        """The index of this process's host."""
        import torch_xla.runtime as xr

        return int(xr.host_index())
