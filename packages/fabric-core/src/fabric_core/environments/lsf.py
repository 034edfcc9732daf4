"""The environment of processes started by ``jsrun`` under IBM Spectrum LSF."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

from fabric_core.environments._exported import ExternallyStartedEnvironment
from fabric_core.environments._variables import first_int, port_from_job_id, read_int

_REQUIRED: Final = ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")


class LSFEnvironment(ExternallyStartedEnvironment):
    """Tasks started by ``jsrun`` in an LSF job (e.g. on Summit-style machines).

    Variables read: ``JSM_NAMESPACE_SIZE`` (world size), ``JSM_NAMESPACE_RANK`` (global
    rank), ``JSM_NAMESPACE_LOCAL_RANK`` (local rank), ``JSM_NAMESPACE_LOCAL_SIZE`` (processes
    per node, when set), ``LSB_JOBID`` (main port) and ``MASTER_PORT``, which wins when set.

    The hosts come from the file named by ``LSB_DJOB_RANKFILE``: one host name per line,
    repeated once per slot. Its first line is the launch (batch) node, which runs no
    training task, and is skipped when the file has more than one line. The main address
    is the first compute host; the node rank is the position of this machine's host name
    (``socket.gethostname()``, compared with and without the domain) among the distinct
    compute hosts, in file order.
    """

    detection_priority = 30

    def __init__(self) -> None:
        self._hosts: list[str] | None = None

    @staticmethod
    def detect() -> bool:
        """True when LSF and jsrun set ``LSB_JOBID``, ``LSB_DJOB_RANKFILE`` and the ``JSM_NAMESPACE_*`` ranks."""
        return all(os.environ.get(name) for name in _REQUIRED)

    @property
    def main_address(self) -> str:
        """The first compute host of the rank file."""
        return self.hosts()[0]

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` when set, else 10000 plus the last four digits of ``LSB_JOBID``.

        Raises:
            ValueError: Neither ``MASTER_PORT`` nor ``LSB_JOBID`` is set.
        """
        return port_from_job_id("LSB_JOBID")

    def hosts(self) -> list[str]:
        """The distinct compute hosts of the job, in rank-file order (read once).

        Raises:
            ValueError: ``LSB_DJOB_RANKFILE`` is unset, unreadable or empty.
        """
        if self._hosts is None:
            self._hosts = read_rankfile_hosts(os.environ.get("LSB_DJOB_RANKFILE", ""))
        return self._hosts

    def world_size(self) -> int:
        """``JSM_NAMESPACE_SIZE``."""
        return read_int("JSM_NAMESPACE_SIZE")

    def global_rank(self) -> int:
        """``JSM_NAMESPACE_RANK``."""
        return read_int("JSM_NAMESPACE_RANK", hint="Start the script with jsrun.")

    def local_rank(self) -> int:
        """``JSM_NAMESPACE_LOCAL_RANK``."""
        return read_int("JSM_NAMESPACE_LOCAL_RANK")

    def node_rank(self) -> int:
        """The index of this machine's host name among the distinct compute hosts.

        Raises:
            ValueError: This host is not in the rank file.
        """
        hosts = self.hosts()
        name = socket.gethostname()
        for candidate in (name, name.split(".")[0]):
            for index, host in enumerate(hosts):
                if candidate in (host, host.split(".")[0]):
                    return index
        raise ValueError(
            f"This machine's host name {name!r} is not among the hosts of LSB_DJOB_RANKFILE "
            f"({', '.join(hosts)}), so its node rank is unknown. Start the script with jsrun on the "
            "job's compute hosts."
        )

    def processes_per_node(self) -> int | None:
        """``JSM_NAMESPACE_LOCAL_SIZE`` when set, else the world size over the number of hosts if even."""
        found = first_int("JSM_NAMESPACE_LOCAL_SIZE")
        if found is not None:
            return found[1]
        world_size, hosts = self.world_size(), len(self.hosts())
        return world_size // hosts if world_size % hosts == 0 else None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Check ``devices`` and ``num_nodes`` against the hosts and tasks of the job.

        Raises:
            ValueError: ``num_nodes`` differs from the hosts in ``LSB_DJOB_RANKFILE``, or
                ``devices`` x ``num_nodes`` from ``JSM_NAMESPACE_SIZE``.
        """
        hosts = len(self.hosts())
        if num_nodes != hosts:
            raise ValueError(
                f"The LSF job runs on {hosts} compute host(s) (LSB_DJOB_RANKFILE), but Fabric(num_nodes={num_nodes}) "
                f"was given. Set num_nodes={hosts}, or change the hosts requested with 'bsub -nnodes'."
            )
        world_size = self.world_size()
        if num_devices * num_nodes != world_size:
            raise ValueError(
                f"jsrun started {world_size} task(s) (JSM_NAMESPACE_SIZE={world_size}), but Fabric(devices="
                f"{num_devices}, num_nodes={num_nodes}) implies {num_devices * num_nodes}. Start one task per "
                "device (e.g. 'jsrun --tasks_per_rs 1 --gpu_per_rs 1 ...') or change devices."
            )


def read_rankfile_hosts(path: str) -> list[str]:
    """The distinct compute hosts listed in an LSF rank file, in order.

    Args:
        path: The file named by ``LSB_DJOB_RANKFILE`` (one host per line; the first line is
            the launch node and is skipped when more lines follow).

    Returns:
        The host names, each once.

    Raises:
        ValueError: ``path`` is empty, unreadable, or lists no host.
    """
    if not path:
        raise ValueError(
            "LSB_DJOB_RANKFILE is not set, so the hosts of the LSF job are unknown. Start with jsrun."
        )
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as error:
        raise ValueError(f"Cannot read the LSF rank file LSB_DJOB_RANKFILE={path!r}: {error}") from None
    if not lines:
        raise ValueError(f"The LSF rank file LSB_DJOB_RANKFILE={path!r} lists no host.")
    compute = lines[1:] if len(lines) > 1 else lines
    return list(dict.fromkeys(compute))
