"""Stopping at a step boundary when the job is preempted, so the loop can save first.

A scheduler that preempts a job sends SIGTERM and kills it a little later (SLURM after
``KillWait``, 30 s by default; Kubernetes after ``terminationGracePeriodSeconds``); SLURM
sends SIGUSR1 before a time limit when asked (``#SBATCH --signal=SIGUSR1@90``).
``fabric run`` passes these signals on to every rank and waits ``--grace-period`` seconds.

`Preemption` catches the signals in each rank, but only notes them: the signal can
arrive anywhere, in the middle of a collective or of ``fabric.save``, and at a different
step on each rank. `Preemption.requested` is where the loop asks, and every rank gets
the same answer (one all-reduce of a flag), so all of them save the same step and stop::

    from fabric_core.utilities.preemption import Preemption

    with Preemption(fabric) as preemption:  # SLURM: Preemption(fabric, signals=("SIGTERM", "SIGUSR1"))
        for step in range(start, steps):
            ...  # the training step
            if preemption.requested():
                fabric.save(path, state)
                break
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["Preemption"]


class Preemption:
    """Note SIGTERM (and other signals when asked) instead of dying; let the loop save and stop.

    The handlers are installed when the object is created and the previous ones restored by
    `close` (or at the end of a ``with`` block). While installed, the signals no
    longer end the process: the loop must ask `requested` regularly, or the launcher
    kills the ranks when its grace period is over.

    Args:
        fabric: The run's ``Fabric``; its strategy agrees on the answer across ranks.
        signals: Signal names (``"SIGTERM"``, ``"SIGUSR1"``, ...) or numbers to catch.

    Raises:
        ValueError: A signal name is unknown, or names SIGKILL/SIGSTOP (which cannot be caught).
        RuntimeError: Created outside the main thread (Python installs handlers only there).
    """

    def __init__(self, fabric: Fabric, signals: Iterable[str | int] = ("SIGTERM",)) -> None:
        self._fabric = fabric
        self._signals = [
            _signal_of(each) for each in ([signals] if isinstance(signals, (str, int)) else signals)
        ]
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "Preemption(fabric) must be created in the main thread: Python installs signal handlers "
                "only there. Create it before starting other threads, e.g. right after fabric.launch()."
            )
        self._received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        for each in self._signals:
            self._previous[each] = signal.signal(each, self._note)

    @property
    def signal(self) -> str | None:
        """The name of the signal this rank received (``None`` if none did; another rank's may have)."""
        return self._received.name if self._received is not None else None

    def requested(self) -> bool:
        """Whether any rank received one of the signals: the same answer on every rank.

        Call it on every rank at the same point of the loop (it is a collective: one
        all-reduce of a flag when there are several processes).
        """
        local = self._received is not None
        return bool(self._fabric.strategy.reduce_boolean_decision(local, all=False))

    def close(self) -> None:
        """Restore the signal handlers that were installed before (idempotent)."""
        for each, handler in self._previous.items():
            signal.signal(each, handler)
        self._previous = {}

    def __enter__(self) -> Preemption:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signal.Signals(signum)


def _signal_of(value: str | int) -> signal.Signals:
    try:
        if isinstance(value, str):
            name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
            found = signal.Signals[name]
        else:
            found = signal.Signals(value)
    except (KeyError, ValueError):
        raise ValueError(
            f"Preemption(signals=...) got {value!r}, which is not a signal: use names such as 'SIGTERM' or "
            "'SIGUSR1' (SLURM's warning before a time limit)."
        ) from None
    if found in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(
            f"Preemption(signals=...) got {found.name}, which no process can catch; use 'SIGTERM'."
        )
    return found
