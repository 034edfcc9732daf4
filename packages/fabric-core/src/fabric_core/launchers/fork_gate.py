"""Holding forked workers back until the agent has forked the last of them.

With ``start_method="fork"`` the agent forks its workers one after another from a process
that already runs the rendezvous store's server thread. When a worker that started early
connects to the store, that thread looks up the peer's address (``getnameinfo``), holding
a lock inside the C library for a moment. A worker forked in that moment starts with the
lock held and no thread to release it, and its own first connection to the store then
waits forever (seen once in a few launches of 8 workers on 2 cores). Forking is safe only
while the server thread is idle, so no worker may touch the store before the agent has
forked them all: the last worker to start opens the gate for the others.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

__all__ = ["ForkGate"]


class ForkGate:
    """Wraps a worker function so that no worker runs it before every local worker exists.

    The gate is a pipe made in the agent's process and inherited by every forked worker.
    The worker with the highest local rank is forked last; when it starts, it writes one
    byte for each of the others, marked with the attempt (``TORCHELASTIC_RESTART_COUNT``)
    so that bytes left over by a failed attempt do not open the gate of the next one.

    Args:
        function: The worker function.
        workers: How many workers the agent forks on this node.
    """

    def __init__(self, function: Callable[..., Any], workers: int) -> None:
        self._function = function
        self._workers = workers
        self._read, self._write = os.pipe()
        functools.update_wrapper(self, function)  # the agent names the entrypoint by its __name__

    def __call__(self, *args: Any) -> Any:
        """Wait for the other local workers to exist, then run the worker function."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) % 256
        if local_rank == self._workers - 1:
            os.write(self._write, bytes([attempt]) * (self._workers - 1))
        else:
            while (byte := os.read(self._read, 1)) != bytes([attempt]):
                if not byte:  # cannot happen while this worker holds a write end; never spin
                    raise RuntimeError("The launcher's fork gate closed before the last worker started.")
                # else a byte left over by an earlier attempt
        return self._function(*args)

    def close(self) -> None:
        """Close the agent's ends of the pipe (each worker keeps its own copies)."""
        os.close(self._read)
        os.close(self._write)
