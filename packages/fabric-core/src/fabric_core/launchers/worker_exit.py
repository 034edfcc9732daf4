"""How a worker process ends: its error reaches the agent, and its exit status survives teardown.

The launcher installs this in each worker it starts (`install_worker_exit`); a
strategy that forms a process group asks for the group to be destroyed at exit
(`destroy_process_group_at_exit`), which the installed exit does itself.

Two problems are solved here, both only under PyTorch's elastic agent (``fabric run``,
``torchrun``, the launchers of ``ddp`` and ``ddp_spawn``):

- An uncaught exception is written to the agent's error file with its message and time,
  so the launcher's summary can tell the rank that raised first from the ranks whose
  collectives broke afterwards.
- A gloo worker that exits normally can still abort in a C++ destructor during the
  interpreter's final teardown ("terminate called without an active exception", a
  torch.distributed issue), turning a finished run into a crash that makes the agent stop
  the other ranks. The worker therefore leaves with ``os._exit`` once Python's own
  shutdown work (every ``atexit`` handler registered after installation) is done, with the
  status Python would have used: 1 after an uncaught exception, the ``sys.exit`` code, else 0.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import Any

__all__ = ["destroy_process_group_at_exit", "install_worker_exit", "record_for_agent", "under_elastic_agent"]


def under_elastic_agent() -> bool:
    """Whether this process is a worker started by PyTorch's elastic agent."""
    return "TORCHELASTIC_ERROR_FILE" in os.environ


def install_worker_exit() -> None:
    """Record uncaught errors for the agent and keep the exit status (once; only under the agent)."""
    if under_elastic_agent():
        _WORKER_EXIT.install()


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (registered once).

    A process that exits with its gloo group alive can abort in the group's destructor.
    Where `install_worker_exit` is active it destroys the group itself, last.
    """
    _WORKER_EXIT.destroy_group_at_exit()


class _WorkerExit:
    def __init__(self) -> None:
        self.status = 0
        self.installed = False
        self.destroys_group = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if self.installed:
                return
            self.installed = True
        original_exit, original_hook = sys.exit, sys.excepthook

        def exit_with(status: Any = None) -> None:
            self.status = _status_of(status)
            original_exit(status)

        def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
            self.status = 1
            if isinstance(value, Exception):
                record_for_agent(value)
            original_hook(kind, value, traceback)

        sys.exit = exit_with  # type: ignore[assignment]
        sys.excepthook = hook
        atexit.register(self.finish)

    def destroy_group_at_exit(self) -> None:
        with self._lock:
            if self.installed or self.destroys_group:
                return
            self.destroys_group = True
        atexit.register(_destroy_process_group)

    def finish(self) -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        _destroy_process_group()
        os._exit(self.status)


def record_for_agent(error: BaseException) -> None:
    """Write ``error`` to the elastic agent's error file for this worker (nothing outside the agent).

    The format is torch's (``ErrorHandler.record_exception``): the agent reads the message
    and time. Unlike torch's, the write is atomic. An error with an ``agent_info`` dict (e.g.
    `CollectiveTimeoutError`, naming the ranks
    to blame) adds it under ``extraInfo["fabric"]`` for the launcher's summary.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    extra: dict[str, Any] = {
        "py_callstack": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        "timestamp": str(int(time.time())),
    }
    info = getattr(error, "agent_info", None)
    if isinstance(info, dict):
        extra["fabric"] = info
    data = {"message": {"message": f"{type(error).__name__}: {error}", "extraInfo": extra}}
    # Written aside, then renamed: the agent stops the other workers (SIGTERM) as soon as one
    # fails and then parses their error files, and a half-written one crashes the agent.
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "w") as file:
            json.dump(data, file)
        os.replace(partial, path)
    except (OSError, TypeError, ValueError):  # recording is best effort; the traceback is still printed
        pass


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _status_of(status: Any) -> int:
    if status is None:
        return 0
    if isinstance(status, int):
        return status
    return 1


_WORKER_EXIT = _WorkerExit()
