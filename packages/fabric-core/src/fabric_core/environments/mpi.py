"""The environment of processes started by ``mpirun`` / ``mpiexec`` (Open MPI, MPICH, Intel MPI).

Only environment variables are read; ``mpi4py`` is not needed and not imported.
"""

from __future__ import annotations

import os
from typing import Final

from fabric_core.environments._exported import ExternallyStartedEnvironment
from fabric_core.environments._variables import first_int

DEFAULT_MAIN_PORT: Final = 29500
"""The main port when ``MASTER_PORT`` is not exported (the same default as torchrun's)."""

_SIZE: Final = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_RANK: Final = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")
_LOCAL_RANK: Final = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
_LOCAL_SIZE: Final = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


class MPIEnvironment(ExternallyStartedEnvironment):
    """Processes started by an MPI launcher, read from the variables it exports.

    | quantity    | Open MPI (``mpirun``)             | MPICH / Intel MPI (PMI) |
    |-------------|-----------------------------------|-------------------------|
    | world size  | ``OMPI_COMM_WORLD_SIZE``          | ``PMI_SIZE``            |
    | global rank | ``OMPI_COMM_WORLD_RANK``          | ``PMI_RANK``            |
    | local rank  | ``OMPI_COMM_WORLD_LOCAL_RANK``    | ``MPI_LOCALRANKID``     |
    | local size  | ``OMPI_COMM_WORLD_LOCAL_SIZE``    | ``MPI_LOCALNRANKS``     |

    When the launcher exports no local rank or local size, the local rank is 0 and each
    process is taken to be alone on its node (local size 1). The node rank is
    ``rank // local size``, which assumes ranks are placed on nodes in blocks (Open MPI's
    default ``--map-by slot``/``core`` and MPICH's default do this; ``--map-by node`` does not).

    The main address is ``MASTER_ADDR``; it may be left out only when every rank runs on
    this machine (local size equals world size), and then defaults to ``127.0.0.1``. Export
    it to the ranks with ``mpirun -x MASTER_ADDR`` (Open MPI) or ``mpiexec -genv MASTER_ADDR``
    (MPICH). The main port is ``MASTER_PORT``, or 29500.

    Detection: ``OMPI_COMM_WORLD_SIZE`` is set, or ``PMI_SIZE`` is set by a process manager
    that is not ``srun``. SLURM's own PMI plugins (``srun --mpi=pmi2``) also export
    ``PMI_SIZE``, but no local size; such tasks (``SLURM_PROCID`` set, ``MPI_LOCALNRANKS``
    unset) are left to the SLURM environment, which knows their local ranks.
    """

    detection_priority = 40

    @staticmethod
    def detect() -> bool:
        """True in a process that ``mpirun``/``mpiexec`` started (see the class docstring)."""
        if os.environ.get("OMPI_COMM_WORLD_SIZE"):
            return True
        if not os.environ.get("PMI_SIZE"):
            return False
        return bool(os.environ.get("MPI_LOCALNRANKS")) or "SLURM_PROCID" not in os.environ

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR``, or ``127.0.0.1`` when every rank runs on this machine.

        Raises:
            ValueError: The ranks span several machines (or the launcher does not say) and
                ``MASTER_ADDR`` is not exported.
        """
        address = os.environ.get("MASTER_ADDR", "").strip()
        if address:
            return address
        world_size, local_size = self.world_size(), self.processes_per_node()
        if world_size == 1 or local_size == world_size:
            return "127.0.0.1"
        spread = (
            f"the {world_size} ranks span several machines ({local_size} on this one)"
            if local_size
            else f"the MPI launcher does not say whether the {world_size} ranks share this machine"
        )
        raise ValueError(
            f"MASTER_ADDR is not set, but {spread}. Export the address of the machine that runs rank 0 to "
            "every rank: 'MASTER_ADDR=<host of rank 0> mpirun -x MASTER_ADDR ...' (Open MPI) or "
            "'mpiexec -genv MASTER_ADDR <host of rank 0> ...' (MPICH)."
        )

    @property
    def main_port(self) -> int:
        """``MASTER_PORT``, or 29500."""
        found = first_int("MASTER_PORT")
        return DEFAULT_MAIN_PORT if found is None else found[1]

    def world_size(self) -> int:
        """``OMPI_COMM_WORLD_SIZE`` or ``PMI_SIZE``."""
        return _read(_SIZE, required=True)

    def global_rank(self) -> int:
        """``OMPI_COMM_WORLD_RANK`` or ``PMI_RANK``."""
        return _read(_RANK, required=True)

    def local_rank(self) -> int:
        """``OMPI_COMM_WORLD_LOCAL_RANK`` or ``MPI_LOCALRANKID``, or 0 when neither is set."""
        return _read(_LOCAL_RANK)

    def node_rank(self) -> int:
        """``rank // local size`` (local size 1 when the launcher does not export it)."""
        return self.global_rank() // (self.processes_per_node() or 1)

    def processes_per_node(self) -> int | None:
        """``OMPI_COMM_WORLD_LOCAL_SIZE`` or ``MPI_LOCALNRANKS``, or ``None`` when neither is set."""
        found = first_int(*_LOCAL_SIZE)
        return None if found is None else found[1]

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Check ``devices`` against the local size and ``devices`` x ``num_nodes`` against the world size.

        Raises:
            ValueError: The numbers passed to Fabric disagree with what the MPI launcher started.
        """
        local_size = self.processes_per_node()
        if local_size is not None and local_size != num_devices:
            name = _first_set(_LOCAL_SIZE)
            raise ValueError(
                f"The MPI launcher started {local_size} process(es) on this node ({name}={local_size}), but "
                f"Fabric(devices={num_devices}) was given. Set devices={local_size}, or start one process per "
                f"device (e.g. 'mpirun -np <devices x nodes> --npernode {num_devices}')."
            )
        world_size = self.world_size()
        if num_devices * num_nodes != world_size:
            name = _first_set(_SIZE)
            raise ValueError(
                f"The MPI launcher started {world_size} process(es) ({name}={world_size}), but Fabric(devices="
                f"{num_devices}, num_nodes={num_nodes}) implies {num_devices * num_nodes}. Change num_nodes or "
                f"devices, or start 'mpirun -np {num_devices * num_nodes}'."
            )


def _first_set(names: tuple[str, ...]) -> str:
    return next((name for name in names if os.environ.get(name)), names[0])


def _read(names: tuple[str, ...], *, required: bool = False) -> int:
    found = first_int(*names)
    if found is not None:
        return found[1]
    if required:
        raise ValueError(
            f"None of {', '.join(names)} is set. Start the script with mpirun/mpiexec, or choose another "
            "environment with FABRIC_CLUSTER_ENVIRONMENT."
        )
    return 0
