"""Running workers under PyTorch's elastic agent (what ``torchrun`` uses).

One function, `run_agent`, turns a few fabric settings into a
``torch.distributed.launcher.LaunchConfig`` and runs the agent. The agent starts the
workers, forms the rendezvous, restarts the group up to ``max_restarts`` times, and when
one worker fails stops the others; the failure comes back as `WorkersFailedError`
naming the ranks. When the agent itself gets SIGTERM (a scheduler preempting the job),
SIGINT, SIGHUP, SIGQUIT or SIGUSR1 (SLURM's warning before a time limit), it passes the
signal on to every worker, waits up to ``grace_period`` seconds for them to save and
leave, kills the rest, and `WorkersStoppedError` says so in one line.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from fabric_core.environments.local import find_free_port
from fabric_core.launchers.fork_gate import ForkGate

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MULTI_NODE_PORT",
    "FORWARDED_SIGNALS",
    "AgentSettings",
    "FailureRole",
    "WorkerFailure",
    "WorkersFailedError",
    "WorkersStoppedError",
    "fit_thread_pools",
    "run_agent",
]

DEFAULT_MULTI_NODE_PORT = 29500
"""The rendezvous port on the main node when none is given (torchrun's default)."""

DEFAULT_GRACE_PERIOD = 25.0
"""Seconds the workers get to save and exit after the launcher passed a signal on to them.

Below the 30 s that SLURM (``KillWait``) and Kubernetes (``terminationGracePeriodSeconds``)
wait by default between their SIGTERM and SIGKILL, so the launcher still reports.
"""

FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1")
"""The signals the launcher passes on to the workers before it stops (torch's set, plus SLURM's SIGUSR1)."""


@dataclass(frozen=True)
class AgentSettings:
    """How many workers to start, where they meet, and how failures are handled.

    Attributes:
        nproc_per_node: Workers on this node.
        num_nodes: Nodes in the job; each runs one agent.
        node_rank: This node's rank (0 hosts the rendezvous).
        main_address: Address of node 0.
        main_port: Rendezvous port on node 0; a free port for a single node when ``None``,
            `DEFAULT_MULTI_NODE_PORT` for several nodes.
        max_restarts: How often the whole group is restarted after a failure.
        start_method: ``"spawn"`` or ``"fork"`` for function entrypoints (scripts always run
            as new interpreters). Forked workers wait until the last of them is forked
            before they run the function (``fabric_core.launchers.fork_gate``).
        run_id: Identifies the job in the rendezvous; every node must use the same one
            (default: ``FABRIC_RUN_ID``, else derived from the rendezvous endpoint).
        grace_period: Seconds the workers get to exit after a signal was passed on to them
            (or after another worker failed) before they are killed.
    """

    nproc_per_node: int
    num_nodes: int = 1
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int | None = None
    max_restarts: int = 0
    start_method: str = "spawn"
    run_id: str | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD

    def resolved_port(self) -> int:
        """The rendezvous port to use."""
        if self.main_port is not None:
            return self.main_port
        return find_free_port() if self.num_nodes == 1 else DEFAULT_MULTI_NODE_PORT


FailureRole = Literal["cause", "waited", "stopped", "lost_peer"]
_ROLE_ORDER: tuple[FailureRole, ...] = ("cause", "waited", "stopped", "lost_peer")


@dataclass(frozen=True)
class WorkerFailure:
    """One worker that failed: its ranks and how it ended.

    Attributes:
        blames: The ranks this worker's error names as the cause (a collective that timed
            out names the ranks that did not arrive), with ``blame_summary`` saying what
            they did.
        blamed_for: Set when a worker's error (another's, or its own) blames this one: what it did.
    """

    global_rank: int
    local_rank: int
    exitcode: int
    message: str
    blames: tuple[int, ...] = ()
    blame_summary: str = ""
    blamed_for: str = ""

    @property
    def role(self) -> FailureRole:
        """The part this worker played in the failure.

        ``"cause"``: it failed on its own, or a waiting rank's error named it (it did not
        arrive at a collective), however it ended. ``"waited"``: its collective timed out
        waiting for the ranks it names. ``"stopped"``: the agent stopped it (SIGTERM) after
        another worker failed. ``"lost_peer"``: its collective broke because a peer's
        connection closed; a surviving rank's collective fails as soon as the failing
        rank's process closes its connections, sometimes before the agent has seen that
        process exit, so such a rank is not the cause even when it is reported first.
        """
        if self.blamed_for:
            return "cause"
        if self.blames:
            return "waited"
        if any(marker in self.message for marker in _PEER_LOST_MARKERS):
            return "lost_peer"
        return "stopped" if self.exitcode == -signal.SIGTERM else "cause"

    def describe(self) -> str:
        """E.g. ``rank 1 (local rank 1) was killed by SIGKILL``."""
        if self.blamed_for:
            return f"rank {self.global_rank} (local rank {self.local_rank}) {self.blamed_for}"
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
        self.failures = sorted(
            _apply_blame(failures), key=lambda f: (_ROLE_ORDER.index(f.role), f.global_rank)
        )
        causes = [f for f in self.failures if f.role == self.failures[0].role]
        # a rank that waited is named in the cause's description already
        waited = (
            {f.global_rank for f in self.failures if f.role == "waited"} if causes[0].blamed_for else set()
        )
        followed = [f.global_rank for f in self.failures if f not in causes and f.global_rank not in waited]
        message = "; ".join(f.describe() for f in causes)
        if followed:
            message += f". Rank(s) {', '.join(map(str, followed))} stopped as a consequence"
        super().__init__(f"{message[0].upper()}{message[1:]}. See the output above for the error.")

    @property
    def exitcode(self) -> int:
        """A process exit status for the launcher: the first failure's code, or 128+signal."""
        first = self.failures[0]
        code = first.exitcode
        if first.blamed_for and code <= 0:
            return 1  # it did not arrive; that the agent then stopped it is a consequence
        return code if code > 0 else 128 - code if code < 0 else 1


class WorkersStoppedError(RuntimeError):
    """The launcher got a signal, passed it on to its workers and stopped them.

    Attributes:
        signal: The signal the launcher received.
        killed: Workers that did not exit within the grace period and were killed.
    """

    def __init__(self, received: signal.Signals, workers: int, grace_period: float, killed: int) -> None:
        self.signal = received
        self.killed = killed
        outcome = (
            f"{killed} of them did not exit within the {grace_period:g} s grace period (--grace-period) and "
            "were killed with SIGKILL"
            if killed
            else f"they exited within the {grace_period:g} s grace period"
        )
        super().__init__(
            f"received {received.name} and passed it on to the {workers} local worker(s); {outcome}. "
            f"Exit status {self.exitcode}."
        )

    @property
    def exitcode(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by that signal (143 for SIGTERM)."""
        return 128 + int(self.signal)


def run_agent(
    settings: AgentSettings, entrypoint: Callable[..., Any] | str, args: list[Any], *, label: str = "fabric"
) -> dict[int, Any]:
    """Start the workers and wait for all of them.

    Args:
        settings: Sizes, rendezvous address and restart policy.
        entrypoint: An executable (``sys.executable``, with ``args`` its command line), or a
            picklable function called as ``entrypoint(*args)`` in each worker.
        args: The command-line arguments or the function arguments.
        label: How the launcher's own lines begin (e.g. ``"fabric run"``).

    Returns:
        For a function entrypoint, each local worker's return value by its global rank.

    Raises:
        WorkersFailedError: A worker failed (after the restarts were used up).
        WorkersStoppedError: The launcher received a signal and stopped the workers.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
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
        signals_to_handle=",".join(FORWARDED_SIGNALS),
        shutdown_timeout=math.ceil(settings.grace_period),
    )
    if settings.num_nodes > 1:
        _announce_rendezvous(settings, port)
    gate: ForkGate | None = None
    if callable(entrypoint) and settings.start_method == "fork" and settings.nproc_per_node > 1:
        entrypoint = gate = ForkGate(entrypoint, settings.nproc_per_node)
    with _agent_log(label, settings.max_restarts) as log:
        try:
            return launch_agent(config, entrypoint, list(args))
        except ChildFailedError as error:
            failures = [_failure_of(rank, failure) for rank, failure in sorted(error.failures.items())]
            raise WorkersFailedError(failures) from None
        except SignalException as error:
            raise WorkersStoppedError(
                error.sigval, settings.nproc_per_node, settings.grace_period, log.killed
            ) from None
        finally:
            if gate is not None:
                gate.close()


def fit_thread_pools() -> None:
    """In a worker, size torch's thread pools to ``OMP_NUM_THREADS`` (which `run_agent` sets).

    torch reads ``OMP_NUM_THREADS`` once, when it starts. A worker forked from a process
    that had imported torch keeps that process's thread count instead (every core), so
    eight forked workers on two cores would each run two threads and spend the machine
    waiting on each other. Spawned and re-run workers read the variable themselves.
    """
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if not wanted.isdigit() or int(wanted) < 1 or "torch" not in sys.modules:
        return
    import torch

    if torch.get_num_threads() != int(wanted):
        torch.set_num_threads(int(wanted))


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


class _AgentLog(logging.Filter):
    """The agent's log turned into fabric's lines.

    Drops the agent's own account of a shutdown ("Received 15 death signal", "Sending
    process ... closing signal"), which the launcher's one line replaces; counts the
    workers it had to kill after the grace period; says when the workers are restarted.
    """

    def __init__(self, label: str, max_restarts: int) -> None:
        super().__init__()
        self.label = label
        self.max_restarts = max_restarts
        self.killed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "will restart worker group" in text and "attempts left" in text:
            left = record.args[2] if isinstance(record.args, tuple) and len(record.args) > 2 else None
            which = (
                f" (restart {self.max_restarts - left + 1} of {self.max_restarts})"
                if isinstance(left, int)
                else ""
            )
            print(
                f"{self.label}: a worker failed (its error is above); restarting all workers{which}.",
                file=sys.stderr,
                flush=True,
            )
            return False
        if "Unable to shutdown process" in text:
            self.killed += 1
            return False
        if any(words in text for words in ("closing signal", "death signal", "failed (exitcode")):
            return False  # the launcher's summary says it
        return record.levelno >= logging.WARNING


_AGENT_LOGGERS = (
    "torch.distributed.elastic.agent.server.api",
    "torch.distributed.elastic.multiprocessing.api",
)


@contextmanager
def _agent_log(label: str, max_restarts: int) -> Iterator[_AgentLog]:
    log = _AgentLog(label, max_restarts)
    if os.environ.get("FABRIC_VERBOSE_AGENT"):
        yield log
        return
    loggers = [logging.getLogger(name) for name in _AGENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addFilter(log)
        logger.setLevel(logging.INFO)  # the restart notice is logged at INFO; the filter drops the rest
    try:
        yield log
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeFilter(log)
            logger.setLevel(level)


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


def _failure_of(rank: int, failure: Any) -> WorkerFailure:
    """A `WorkerFailure` from the agent's ``ProcessFailure``, with the blame fabric recorded."""
    message = failure.message
    info = message.get("extraInfo", {}).get("fabric", {}) if isinstance(message, dict) else {}
    blames = info.get("blame", []) if isinstance(info, dict) else []
    return WorkerFailure(
        rank,
        failure.local_rank,
        failure.exitcode,
        _message_of(message),
        blames=tuple(int(r) for r in blames if isinstance(r, int)),
        blame_summary=str(info.get("summary", "")) if isinstance(info, dict) else "",
    )


def _apply_blame(failures: list[WorkerFailure]) -> list[WorkerFailure]:
    """Mark the workers another worker's error names as the cause (e.g. a rank that did not arrive)."""
    blamed: dict[int, str] = {}
    for failure in failures:
        for rank in failure.blames:
            blamed.setdefault(rank, failure.blame_summary or "was named by a waiting rank")
    return [
        replace(failure, blamed_for=blamed[failure.global_rank]) if failure.global_rank in blamed else failure
        for failure in failures
    ]
