"""The environment of processes started by SLURM's ``srun``, and requeueing on SIGUSR1.

A batch script that starts one task per GPU::

    #!/bin/bash
    #SBATCH --nodes=2
    #SBATCH --ntasks-per-node=4
    #SBATCH --gpus-per-node=4
    #SBATCH --signal=SIGUSR1@90
    srun python train.py

``--signal=SIGUSR1@90`` makes SLURM send SIGUSR1 to every task 90 seconds before the time
limit; `register_requeue_handler` turns that into "save, then requeue the job".
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from fabric_core.environments._exported import ExternallyStartedEnvironment
from fabric_core.environments._hostlist import expand_hostlist, iter_hostlist
from fabric_core.environments._variables import first_int, port_from_job_id, read_int

__all__ = ["SLURMEnvironment", "expand_hostlist", "register_requeue_handler", "requeue_job"]

log = logging.getLogger("fabric_core")

INTERACTIVE_JOB_NAMES: Final = frozenset({"bash", "interactive"})
"""Job names that mark an interactive allocation (``salloc``, ``srun --pty bash``), not an ``srun`` job."""

_NODELIST_VARIABLES: Final = ("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
_TASKS_PER_NODE_VARIABLES: Final = (
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
    "SLURM_NTASKS_PER_NODE",
)
_NOT_SRUN_HINT: Final = "Start the script with srun (one task per device), e.g. 'srun python train.py'."

_TASK_COUNT: Final = re.compile(r"(\d+)(?:\(x(\d+)\))?")
_SIGUSR1: Final[int] = getattr(signal, "SIGUSR1", 10)  # absent on Windows; registering it fails there
_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class SLURMEnvironment(ExternallyStartedEnvironment):
    """Tasks started by ``srun``: SLURM tells each task its rank and where the others are.

    Detection: ``SLURM_NTASKS`` is set and ``SLURM_JOB_NAME`` is neither ``bash`` nor
    ``interactive``. Those two names are what an interactive allocation (``salloc``,
    ``srun --pty bash``) is called; there the user runs ``python train.py`` by hand, and
    the process is not one of the tasks SLURM counted, so Fabric launches its own. To use
    ``srun`` inside such an allocation, give the step a name (``srun --job-name=train ...``)
    or set ``FABRIC_CLUSTER_ENVIRONMENT=slurm``.

    Variables read: ``SLURM_NTASKS`` (world size), ``SLURM_PROCID`` (global rank),
    ``SLURM_LOCALID`` (local rank), ``SLURM_NODEID`` (node rank), ``SLURM_NNODES``,
    ``SLURM_STEP_TASKS_PER_NODE`` / ``SLURM_TASKS_PER_NODE`` / ``SLURM_NTASKS_PER_NODE``
    (processes per node; forms like ``4(x2)``), ``SLURM_STEP_NODELIST`` / ``SLURM_NODELIST``
    (main address: the first host), ``SLURM_JOB_ID`` (main port), and ``MASTER_ADDR`` /
    ``MASTER_PORT``, which win when set.
    """

    detection_priority = 50

    @staticmethod
    def detect() -> bool:
        """True in a task that ``srun`` started in a batch job (not an interactive allocation)."""
        if not os.environ.get("SLURM_NTASKS"):
            return False
        return os.environ.get("SLURM_JOB_NAME", "") not in INTERACTIVE_JOB_NAMES

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` when set, else the first host of the step's node list (where task 0 runs).

        Raises:
            ValueError: Neither ``MASTER_ADDR`` nor a node list is set, or the node list is malformed.
        """
        if os.environ.get("MASTER_ADDR", "").strip():
            return os.environ["MASTER_ADDR"].strip()
        for name in _NODELIST_VARIABLES:
            text = os.environ.get(name, "").strip()
            if text:
                try:
                    return next(iter_hostlist(text))
                except ValueError as error:
                    raise ValueError(
                        f"{name} could not be read: {error} Export MASTER_ADDR instead."
                    ) from None
        raise ValueError(
            "Cannot find the main address: neither MASTER_ADDR nor SLURM_NODELIST is set. "
            f"{_NOT_SRUN_HINT} Or export MASTER_ADDR."
        )

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` when set, else 10000 plus the last four digits of ``SLURM_JOB_ID``.

        Every task of the job derives the same port. Two jobs sharing a node whose ids end in
        the same four digits would collide; export ``MASTER_PORT`` to rule that out.

        Raises:
            ValueError: Neither ``MASTER_PORT`` nor ``SLURM_JOB_ID`` is set.
        """
        name = "SLURM_JOB_ID" if os.environ.get("SLURM_JOB_ID") else "SLURM_JOBID"
        return port_from_job_id(name)

    def world_size(self) -> int:
        """``SLURM_NTASKS``."""
        return read_int("SLURM_NTASKS", hint=_NOT_SRUN_HINT)

    def global_rank(self) -> int:
        """``SLURM_PROCID``."""
        return read_int("SLURM_PROCID", hint=_NOT_SRUN_HINT)

    def local_rank(self) -> int:
        """``SLURM_LOCALID``."""
        return read_int("SLURM_LOCALID", hint=_NOT_SRUN_HINT)

    def node_rank(self) -> int:
        """``SLURM_NODEID``."""
        return read_int("SLURM_NODEID", hint=_NOT_SRUN_HINT)

    def num_nodes(self) -> int | None:
        """``SLURM_STEP_NUM_NODES`` / ``SLURM_NNODES`` / ``SLURM_JOB_NUM_NODES``, or ``None`` when unset."""
        found = first_int("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
        return None if found is None else found[1]

    def tasks_per_node(self) -> list[int] | None:
        """The task count of each node, from the first ``*TASKS_PER_NODE`` variable that is set.

        ``"4(x2),3"`` becomes ``[4, 4, 3]``; a single number applies to every node.

        Raises:
            ValueError: The variable is malformed.
        """
        for name in _TASKS_PER_NODE_VARIABLES:
            text = os.environ.get(name, "").strip()
            if text:
                return parse_tasks_per_node(text, name)
        return None

    def processes_per_node(self) -> int | None:
        """The tasks ``srun`` started on this node.

        Read from ``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_TASKS_PER_NODE`` or
        ``SLURM_NTASKS_PER_NODE`` (the entry of this node when counts differ), else
        ``SLURM_NTASKS / SLURM_NNODES`` when that divides evenly; ``None`` when unknown.
        """
        counts = self.tasks_per_node()
        if counts:
            if len(set(counts)) == 1:
                return counts[0]
            node = read_int("SLURM_NODEID", default=0)
            return counts[node] if node < len(counts) else None
        nodes = self.num_nodes()
        tasks = first_int("SLURM_NTASKS")
        if nodes and tasks and tasks[1] % nodes == 0:
            return tasks[1] // nodes
        return None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Check ``devices`` and ``num_nodes`` against the tasks and nodes SLURM started.

        Raises:
            ValueError: The nodes, the tasks per node or the total number of tasks differ from
                what ``Fabric(devices=..., num_nodes=...)`` implies, or the counts per node are uneven.
        """
        slurm_nodes = self.num_nodes()
        if slurm_nodes is not None and slurm_nodes != num_nodes:
            raise ValueError(
                f"SLURM started the job on {slurm_nodes} node(s) (SLURM_NNODES={slurm_nodes}), but "
                f"Fabric(num_nodes={num_nodes}) was given. Set num_nodes={slurm_nodes}, or change "
                "'#SBATCH --nodes' to match."
            )
        counts = self.tasks_per_node()
        if counts and len(set(counts)) > 1:
            raise ValueError(
                f"SLURM started an uneven number of tasks per node ({','.join(map(str, counts))}), but Fabric "
                "needs the same number on every node. Use '#SBATCH --ntasks-per-node=<devices per node>' "
                "instead of '--ntasks'."
            )
        per_node = self.processes_per_node()
        if per_node is not None and per_node != num_devices:
            raise ValueError(
                f"SLURM started {per_node} task(s) per node (--ntasks-per-node), but Fabric(devices={num_devices}) "
                f"was given. Fabric needs one task per device: set devices={per_node}, or change "
                f"'#SBATCH --ntasks-per-node={num_devices}'."
            )
        world_size = self.world_size()
        if num_devices * num_nodes != world_size:
            raise ValueError(
                f"SLURM started {world_size} task(s) (SLURM_NTASKS={world_size}), but Fabric(devices={num_devices}, "
                f"num_nodes={num_nodes}) implies {num_devices * num_nodes}. Launch with srun and one task per "
                "device ('#SBATCH --ntasks-per-node=<devices>', '#SBATCH --nodes=<num_nodes>')."
            )


def parse_tasks_per_node(text: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Expand SLURM's compressed task counts: ``"2(x3),1"`` → ``[2, 2, 2, 1]``.

    Args:
        text: The value of a ``*TASKS_PER_NODE`` variable.
        name: The variable's name, for the error message.

    Returns:
        One count per node, in node order (a plain ``"4"`` gives ``[4]``).

    Raises:
        ValueError: An entry is neither ``N`` nor ``N(xM)``.
    """
    counts: list[int] = []
    for item in text.split(","):
        match = _TASK_COUNT.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"{name}={text!r} is malformed: expected entries like '4' or '4(x2)'.")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def requeue_job() -> bool:
    """Ask SLURM to requeue this job: ``scontrol requeue <job id>``.

    Array jobs requeue their own task (``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID``). Failures
    are logged as errors rather than raised, since this usually runs in a signal handler
    moments before the job is killed.

    Returns:
        Whether ``scontrol`` accepted the request.
    """
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job_id:
        log.error("Cannot requeue: SLURM_JOB_ID is not set, so this process is not part of a SLURM job.")
        return False
    command = ["scontrol", "requeue", job_id]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        log.error(
            "Cannot requeue job %s: the 'scontrol' command was not found on PATH. Run on a node with the "
            "SLURM client tools installed, or requeue by hand with 'scontrol requeue %s'.",
            job_id,
            job_id,
        )
        return False
    if result.returncode != 0:
        log.error(
            "'%s' failed with exit code %d: %s",
            " ".join(command),
            result.returncode,
            (result.stderr or result.stdout).strip(),
        )
        return False
    log.info("Requeued SLURM job %s.", job_id)
    return True


def register_requeue_handler(
    on_signal: Callable[[], None] | None = None, signal_number: int = _SIGUSR1
) -> _SignalHandler:
    """On ``signal_number``, call ``on_signal`` on every rank, then requeue the job from global rank 0.

    Ask SLURM for the signal before the time limit in the batch script::

        #SBATCH --signal=SIGUSR1@90

    SLURM then sends SIGUSR1 to every task 90 seconds before the limit (without a ``B:``
    prefix it goes to the ``srun`` tasks, not to the batch shell). Each task runs
    ``on_signal`` (e.g. save a checkpoint); the task with ``SLURM_PROCID=0`` (or a process
    without ``SLURM_PROCID``) then runs ``scontrol requeue $SLURM_JOB_ID``, which ends the
    job and puts it back in the queue; on restart the script resumes from the checkpoint.
    The job is requeued even when ``on_signal`` raises; the error is raised afterwards.

    ``on_signal`` runs inside a Python signal handler, at an arbitrary point of the
    training loop. A callback that communicates (a collective, a barrier) can deadlock when
    the ranks are interrupted at different points; prefer saving rank-local state there, or
    set a flag that the loop checks at a step boundary and save and call `requeue_job`
    from the loop.

    Args:
        on_signal: Called with no arguments when the signal arrives, before the requeue.
        signal_number: The signal to handle (must match ``--signal``); SIGUSR1 by default.

    Returns:
        The handler that was installed before, so it can be restored with ``signal.signal``.

    Raises:
        ValueError: Called outside the main thread (Python installs signal handlers only there),
            or the signal does not exist on this platform (Windows has no SIGUSR1).
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("Received signal %d: %s.", signum, "saving and requeueing" if on_signal else "requeueing")
        try:
            if on_signal is not None:
                on_signal()
        finally:
            if read_int("SLURM_PROCID", default=0) == 0:
                requeue_job()

    return signal.signal(signal_number, handler)
