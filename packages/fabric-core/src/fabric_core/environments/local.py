"""The environment of processes that fabric starts itself, or of a single process."""

from __future__ import annotations

import os
import socket

from fabric_core.environments.cluster_environment import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    """Processes started by ``fabric run`` or ``fabric.launch()``, or one plain process.

    Reads ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK`` and ``LOCAL_RANK`` when set; a
    lone process defaults to rank 0 on ``127.0.0.1`` and a free port.
    """

    detection_priority = 1000

    def __init__(self) -> None:
        self._world_size = 1
        self._global_rank = 0
        self._main_port: int | None = None

    @staticmethod
    def detect() -> bool:
        """Always true: this is the fallback when no other environment is detected."""
        return True

    @property
    def creates_processes_externally(self) -> bool:
        """True in processes that a fabric launcher started (they carry ``LOCAL_RANK``)."""
        return "LOCAL_RANK" in os.environ

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR``, or ``127.0.0.1``."""
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        """``MASTER_PORT``, or a free port chosen once (and exported for child processes)."""
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        if self._main_port is None:
            self._main_port = find_free_port()
            os.environ["MASTER_PORT"] = str(self._main_port)
        return self._main_port

    def world_size(self) -> int:
        """The world size the strategy recorded."""
        return self._world_size

    def set_world_size(self, size: int) -> None:
        """Record the world size."""
        self._world_size = size

    def global_rank(self) -> int:
        """The global rank the strategy recorded."""
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        """Record the global rank."""
        self._global_rank = rank

    def local_rank(self) -> int:
        """``LOCAL_RANK``, or 0."""
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        """``NODE_RANK`` (or ``GROUP_RANK``), or 0."""
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))


def find_free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
