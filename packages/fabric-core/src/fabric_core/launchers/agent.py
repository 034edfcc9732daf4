"""Running workers under PyTorch's elastic agent (what ``torchrun`` uses).

One function, :func:`run_agent`, turns a few fabric settings into a
``torch.distributed.launcher.LaunchConfig`` and runs the agent. The agent starts the
workers, forms the rendezvous, restarts the group up to ``max_restarts`` times, and when
one worker fails stops the others; the failure comes back as :class:`WorkersFailedError`
naming the ranks.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fabric_core.environments.local import find_free_port

__all__ = [
    "DEFAULT_MULTI_NODE_PORT",
    "AgentSettings",
    "FailureRole",
    "WorkerFailure",
    "WorkersFailedError",
    "run_agent",
]

DEFAULT_MULTI_NODE_PORT = 29500
"""The rendezvous port on the main node when none is given (torchrun's default)."""


@dataclass(frozen=True)
class AgentSettings:
    """How many workers to start, where they meet, and how failures are handled.

    Attributes:
        nproc_per_node: Workers on this node.
        num_nodes: Nodes in the job; each runs one agent.
        node_rank: This node's rank (0 hosts the rendezvous).
        main_address: Address of node 0.
        main_port: Rendezvous port on node 0; a free port for a single node when ``None``,
            :data:`DEFAULT_MULTI_NODE_PORT` for several nodes.
        max_restarts: How often the whole group is restarted after a failure.
        start_method: ``"spawn"`` or ``"fork"`` for function entrypoints (scripts always run
            as new interpreters).
        run_id: Identifies the job in the rendezvous; every node must use the same one
            (default: ``FABRIC_RUN_ID``, else derived from the rendezvous endpoint).
    """

    nproc_per_node: int
    num_nodes: int = 1
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int | None = None
    max_restarts: int = 0
    start_method: str = "spawn"
    run_id: str | None = None

    def resolved_port(self) -> int:
        """The rendezvous port to use."""
        if self.main_port is not None:
            return self.main_port
        return find_free_port() if self.num_nodes == 1 else DEFAULT_MULTI_NODE_PORT


FailureRole = Literal["cause", "stopped", "lost_peer"]
_ROLE_ORDER: tuple[FailureRole, ...] = ("cause", "stopped", "lost_peer")


@dataclass(frozen=True)
class WorkerFailure:
    """One worker that failed: its ranks and how it ended."""

    global_rank: int
    local_rank: int
    exitcode: int
    message: str

    @property
    def role(self) -> FailureRole:
        """The part this worker played in the failure.

        ``"cause"``: it failed on its own. ``"stopped"``: the agent stopped it (SIGTERM)
        after another worker failed. ``"lost_peer"``: its collective broke because a peer's
        connection closed; a surviving rank's collective fails as soon as the failing
        rank's process closes its connections, sometimes before the agent has seen that
        process exit, so such a rank is not the cause even when it is reported first.
        """
        if any(marker in self.message for marker in _PEER_LOST_MARKERS):
            return "lost_peer"
        return "stopped" if self.exitcode == -signal.SIGTERM else "cause"

    def describe(self) -> str:
        """E.g. ``rank 1 (local rank 1) was killed by SIGKILL``."""
        if self.exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-self.exitcode}"
        else:
            how = f"exited with code {self.exitcode}"
            error = self.message.strip().splitlines()[0] if self.message.strip() else ""
            if error and not error.startswith("To enable traceback"):
                how += f" ({error[:200]})"
        return f"rank {self.global_rank} (local rank {self.local_rank}) {how}"


class WorkersFailedError(RuntimeError):
    """One or more workers failed; the agent stopped the others.

    Attributes:
        failures: The workers that failed on their own (the cause), lowest rank first,
            followed by those that failed as a consequence (stopped by the agent, or broken
            off by the lost peer).
    """

    def __init__(self, failures: list[WorkerFailure]) -> None:
        self.failures = sorted(failures, key=lambda f: (_ROLE_ORDER.index(f.role), f.global_rank))
        causes = [f for f in self.failures if f.role == self.failures[0].role]
        followed = [f.global_rank for f in self.failures if f not in causes]
        message = "; ".join(f.describe() for f in causes)
        if followed:
            message += f". Rank(s) {', '.join(map(str, followed))} stopped as a consequence"
        super().__init__(f"{message[0].upper()}{message[1:]}. See the output above for the error.")

    @property
    def exitcode(self) -> int:
        """A process exit status for the launcher: the first failure's code, or 128+signal."""
        code = self.failures[0].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1


def run_agent(
    settings: AgentSettings, entrypoint: Callable[..., Any] | str, args: list[Any]
) -> dict[int, Any]:
    """Start the workers and wait for all of them.

    Args:
        settings: Sizes, rendezvous address and restart policy.
        entrypoint: An executable (``sys.executable``, with ``args`` its command line), or a
            picklable function called as ``entrypoint(*args)`` in each worker.
        args: The command-line arguments or the function arguments.

    Returns:
        For a function entrypoint, each local worker's return value by its global rank.

    Raises:
        WorkersFailedError: A worker failed (after the restarts were used up).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, launch_agent

    _quiet_agent_logging()
    if "OMP_NUM_THREADS" not in os.environ and settings.nproc_per_node > 1:
        # Like torchrun: N workers each using every core would oversubscribe the CPU.
        os.environ["OMP_NUM_THREADS"] = "1"
    port = settings.resolved_port()
    config = LaunchConfig(
        min_nodes=settings.num_nodes,
        max_nodes=settings.num_nodes,
        nproc_per_node=settings.nproc_per_node,
        # Every node must use the same run id; the rendezvous endpoint identifies the job.
        run_id=settings.run_id or os.environ.get("FABRIC_RUN_ID") or f"fabric-{settings.main_address}-{port}",
        rdzv_backend="static",
        rdzv_endpoint=f"{settings.main_address}:{port}",
        rdzv_configs={"rank": settings.node_rank},
        max_restarts=settings.max_restarts,
        monitor_interval=0.1,
        start_method=settings.start_method,
    )
    if settings.num_nodes > 1:
        _announce_rendezvous(settings, port)
    try:
        return launch_agent(config, entrypoint, list(args))
    except ChildFailedError as error:
        failures = [
            WorkerFailure(rank, failure.local_rank, failure.exitcode, _message_of(failure.message))
            for rank, failure in sorted(error.failures.items())
        ]
        raise WorkersFailedError(failures) from None


def _announce_rendezvous(settings: AgentSettings, port: int) -> None:
    """Say, on this node, that it waits for the others and where: a silent wait looks like a hang."""
    others = ", ".join(str(rank) for rank in range(settings.num_nodes) if rank != settings.node_rank)
    where = "it listens" if settings.node_rank == 0 else "node 0 listens"
    print(
        f"fabric: node {settings.node_rank} of {settings.num_nodes} waits for node(s) {others} at "
        f"{settings.main_address}:{port} ({where} there). Start the same script on every node with its "
        "node rank (fabric run --num-nodes N --node-rank R --main-address ADDR, or NODE_RANK / MASTER_ADDR).",
        file=sys.stderr,
        flush=True,
    )


def _quiet_agent_logging() -> None:
    # The agent logs its full configuration at INFO and more; keep warnings and errors.
    if not os.environ.get("FABRIC_VERBOSE_AGENT"):
        logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
        logging.getLogger("torch.distributed.launcher").setLevel(logging.WARNING)


_PEER_LOST_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "remote worker crashing",
    "NCCL communicator was aborted",
)


def _message_of(message: Any) -> str:
    if isinstance(message, dict):
        return str(message.get("message", ""))
    return str(message or "")
