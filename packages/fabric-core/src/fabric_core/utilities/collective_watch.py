"""A collective that times out names the ranks that did not arrive, on every rank.

``torch.distributed`` on gloo raises on a rank whose collective waited longer than the
process group's timeout, but only there, and only with "Timed out waiting 300000ms for
recv operation": the rank that never came keeps running, and the launcher blames the rank
that waited. Fabric's collectives (`fabric_core.utilities.collectives`) therefore
run inside `watched`, and every process of a group with more than one rank runs a
small watch thread. On a timeout:

1. The rank that timed out first posts a *report* (operation, its number in this
   process) to the process group's store (the ``TCPStore`` that torch formed the group
   with, under a ``fabric/watch/<restart>/`` prefix).
2. Every rank's watch thread answers with its *state*: the collective it is in, if any,
   and its main thread's Python stack (``sys._current_frames``).
3. The reporting rank writes the *verdict*: which ranks arrived and which did not, with
   each rank's stack. Every rank that waited raises `CollectiveTimeoutError` with
   it; a rank that did not arrive prints it, records it for the elastic agent (so the
   launcher's summary blames that rank) and leaves with exit code 1 from its watch thread,
   since its main thread may be anywhere, even in native code that cannot be interrupted.

Cost while nothing goes wrong: a counter and a field set per collective, and one store
``check`` per rank every half second. On NCCL, torch's own watchdog aborts a timed-out
collective first (set ``TORCH_NCCL_TRACE_BUFFER_SIZE`` / ``TORCH_NCCL_DUMP_ON_TIMEOUT`` for
its flight recorder); the watch only acts where the backend raises, as gloo does.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import site
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import torch
import torch.distributed as dist

__all__ = ["CollectiveTimeoutError", "start_watch", "watched"]

POLL_INTERVAL: Final = 0.5
"""Seconds between two looks of a watch thread at the store."""

REPLY_TIMEOUT: Final = 10.0
"""Seconds the reporting rank waits for the other ranks' states before naming them unresponsive."""

_STOP_DELAY: Final = 5.0
"""Seconds a rank that did not arrive gives the waiting ranks to report before it exits."""

_CLOSE_TIMEOUT: Final = 3.0
"""Seconds rank 0, hosting the store, waits at exit for the other ranks' watches to stop."""

_INTERNAL_DIRS: Final = tuple(
    str(directory) + os.sep
    for directory in (
        Path(torch.__file__).parent,
        Path(__file__).parent.parent,
        Path(contextlib.__file__).parent,
    )
)
"""Frames in torch, fabric and the standard library are left out of the stacks shown, except those
of installed packages: the user's own code is what matters."""

_PACKAGE_DIRS: Final = tuple(
    {str(Path(path)) + os.sep for path in [*site.getsitepackages(), site.getusersitepackages()]}
)


class CollectiveTimeoutError(RuntimeError):
    """A collective waited longer than the strategy's timeout for ranks that did not arrive.

    Attributes:
        operation: The collective, e.g. ``"all_reduce"``.
        missing: The global ranks that did not arrive (not in the same collective).
        waited: The global ranks that were in the collective and waited.
    """

    def __init__(self, message: str, operation: str, missing: list[int], waited: list[int]) -> None:
        super().__init__(message)
        self.operation = operation
        self.missing = tuple(missing)
        self.waited = tuple(waited)

    @property
    def agent_info(self) -> dict[str, Any]:
        """What the launcher's summary needs: the ranks to blame and what they did."""
        summary = f"did not arrive at {self.operation}"
        if self.waited:
            summary += f"; rank(s) {_ranks(self.waited)} waited for it"
        return {"blame": list(self.missing), "summary": summary}


@contextlib.contextmanager
def watched(operation: str) -> Iterator[None]:
    """Run one collective; if it times out, raise `CollectiveTimeoutError` on every rank.

    Outside a process group of several ranks this does nothing.
    """
    watch = _current_watch()
    if watch is None:
        yield
        return
    watch.seq += 1
    entry, previous = (watch.seq, operation), watch.active
    watch.active = entry
    started = time.monotonic()
    try:
        yield
    except RuntimeError as error:
        if isinstance(error, CollectiveTimeoutError) or "timed out" not in str(error).lower():
            raise
        raise watch.diagnose(entry, time.monotonic() - started) from None
    finally:
        watch.active = previous


def start_watch() -> None:
    """Start this process's watch thread for the default process group (once per group).

    Called where the group is formed; collectives start it too, for groups formed elsewhere.
    """
    _current_watch()


class _Watch:
    def __init__(self, group: Any, store: Any) -> None:
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.group = group
        self.store = dist.PrefixStore(f"fabric/watch/{restart}/", store)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.seq = 0
        self.active: tuple[int, str] | None = None
        self.diagnosing = False
        self.stopped = False
        self.main = threading.main_thread().ident
        # Without the elastic agent, rank 0's process hosts the store: the others must stop
        # asking it before it exits, or torch prints "recvValue failed" warnings on them.
        self.shared_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True)
        self.leaving = threading.Lock()
        if self.shared_store:
            atexit.register(self._leave)
        threading.Thread(target=self._run, name="fabric-collective-watch", daemon=True).start()

    # -- the rank whose collective timed out ------------------------------------------------

    def diagnose(self, entry: tuple[int, str], waited: float) -> CollectiveTimeoutError:
        """Agree with the other ranks on who did not arrive; return the error for this rank."""
        self.diagnosing = True
        seq, operation = entry
        report = json.dumps({"op": operation, "seq": seq, "rank": self.rank, "waited": round(waited, 1)})
        verdict: dict[str, Any] | None
        try:
            if _text(self.store.compare_set("report", "", report)) == report:
                verdict = self._judge(json.loads(report))
                self.store.set("verdict", json.dumps(verdict))
                self._await([f"ack/{rank}" for rank in verdict["answered_missing"]], REPLY_TIMEOUT)
            else:
                found = self._await(["verdict"], 3 * REPLY_TIMEOUT)
                verdict = json.loads(_text(self.store.get("verdict"))) if found else None
                if verdict is None:
                    return self._unexplained(
                        operation, seq, waited, "the rank that reported first went silent"
                    )
                if self.rank in verdict["missing"]:
                    self.store.set(f"ack/{self.rank}", "1")
        except RuntimeError as error:  # the store is gone: say what this rank knows
            return self._unexplained(operation, seq, waited, f"the store did not answer: {error}")
        return _error_for(self.rank, verdict)

    def _judge(self, report: dict[str, Any]) -> dict[str, Any]:
        keys = [f"state/{rank}" for rank in range(self.world_size)]
        self._await(keys, REPLY_TIMEOUT)
        states: dict[int, dict[str, Any]] = {}
        for rank, key in enumerate(keys):
            if self.store.check([key]):
                states[rank] = json.loads(_text(self.store.get(key)))
        here = [report["seq"], report["op"]]
        waited = [rank for rank, state in states.items() if state["active"] == here]
        missing = [rank for rank in range(self.world_size) if rank not in waited]
        return {
            **report,
            "states": {str(rank): state for rank, state in states.items()},
            "waited_ranks": waited,
            "missing": missing,
            "answered_missing": [rank for rank in missing if rank in states],
        }

    def _unexplained(self, operation: str, seq: int, waited: float, why: str) -> CollectiveTimeoutError:
        message = (
            f"Rank {self.rank}: {operation} (collective #{seq} of this process) timed out after {waited:.1f} s; "
            f"fabric could not learn which rank did not arrive ({why})."
        )
        return CollectiveTimeoutError(message, operation, [], [self.rank])

    # -- every rank: the watch thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                time.sleep(POLL_INTERVAL)
                with self.leaving:
                    if self.stopped or _WATCH is not self:  # exiting, or a newer group has its own watch
                        self.stopped = True
                        return
                    if self.shared_store and self.rank != 0 and self.store.check(["closing"]):
                        self.stopped = True
                        self.store.set(f"closed/{self.rank}", "1")
                        return
                    if not (dist.is_initialized() and dist.group.WORLD is self.group):
                        if self.shared_store:
                            continue  # the group was destroyed; keep watching only for rank 0's exit
                        self.stopped = True
                        return
                    reported = self.store.check(["report"])
                if reported:
                    self._answer()
                    return
        except Exception:  # the store went away: nothing left to watch
            return

    def _leave(self) -> None:
        """At exit, without the agent: rank 0 waits until the others stopped using its store."""
        with self.leaving:
            if self.stopped:
                return
            self.stopped = True
            try:
                if self.rank == 0:
                    self.store.set("closing", "1")
                    self._await([f"closed/{rank}" for rank in range(1, self.world_size)], _CLOSE_TIMEOUT)
                else:
                    self.store.set(f"closed/{self.rank}", "1")
            except Exception:  # rank 0 is gone already
                pass

    def _answer(self) -> None:
        state = {"active": list(self.active) if self.active else None, "stack": self._stack()}
        self.store.set(f"state/{self.rank}", json.dumps(state))
        if not self._await(["verdict"], 3 * REPLY_TIMEOUT):
            return
        verdict = json.loads(_text(self.store.get("verdict")))
        if self.rank not in verdict["missing"] or self.diagnosing:
            return  # this rank's own collective raises the error
        from fabric_core.launchers.worker_exit import record_for_agent

        error = _error_for(self.rank, verdict)
        print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        record_for_agent(error)
        self.store.set(f"ack/{self.rank}", "1")
        # Let the waiting ranks raise first: the launcher then stops this rank, or it leaves.
        time.sleep(_STOP_DELAY)
        os._exit(1)

    def _stack(self) -> list[str]:
        frame = sys._current_frames().get(self.main) if self.main is not None else None
        if frame is None:
            return []
        frames = [f for f in traceback.extract_stack(frame) if _shown(f.filename)]
        return traceback.format_list(frames[-8:])

    def _await(self, keys: list[str], timeout: float) -> bool:
        # check() in a loop: a timed-out store.wait() logs C++ warnings on stderr
        deadline = time.monotonic() + timeout
        while not self.store.check(keys):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def _error_for(rank: int, verdict: dict[str, Any]) -> CollectiveTimeoutError:
    operation, seq, missing, waited = (
        verdict["op"],
        verdict["seq"],
        verdict["missing"],
        verdict["waited_ranks"],
    )
    states = verdict["states"]
    lines = [
        f"Rank {rank}: {operation} (collective #{seq}) timed out after {verdict['waited']:.1f} s: "
        f"rank(s) {_ranks(missing)} did not arrive; rank(s) {_ranks(waited)} waited for it."
    ]
    other_collective = False
    for each in missing:
        state = states.get(str(each))
        if state is None:
            lines.append(
                f"Rank {each} did not answer within {REPLY_TIMEOUT:.0f} s: it has exited, or is stuck in native "
                "code that holds the GIL."
            )
            continue
        if state["active"]:
            other_collective = True
            doing = f"is in {state['active'][1]} (its collective #{state['active'][0]}) instead"
        else:
            doing = "is running other code"
        lines.append(f"Rank {each} {doing}:")
        lines.extend(_indent(state["stack"]))
    for each in waited:
        lines.append(f"Rank {each} waits in {operation} at:")
        lines.extend(_indent(states[str(each)]["stack"]))
    if other_collective:
        lines.append(
            "The ranks called different collectives; run with TORCH_DISTRIBUTED_DEBUG=DETAIL to have torch "
            "check the order and shapes of every collective."
        )
    lines.append(
        "Every rank must call the same collectives in the same order. If a rank was only slow (a long "
        "evaluation or save on one rank), give the strategy a longer timeout, e.g. "
        "DDPStrategy(timeout=timedelta(minutes=30))."
    )
    return CollectiveTimeoutError("\n".join(lines), operation, missing, waited)


def _current_watch() -> _Watch | None:
    global _WATCH
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    group = dist.group.WORLD
    watch = _WATCH
    if watch is not None and watch.group is group:
        return watch
    with _LOCK:
        if _WATCH is None or _WATCH.group is not group:
            if _WATCH is not None:
                _WATCH.stopped = True
            try:
                store = dist.distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError, ValueError):
                return None  # a group without a store (or a torch without the accessor): no watch
            _WATCH = _Watch(group, store)
        return _WATCH


def _shown(filename: str) -> bool:
    if filename.startswith(_PACKAGE_DIRS) and not filename.startswith(_INTERNAL_DIRS[:2]):
        return True
    return not filename.startswith(_INTERNAL_DIRS)


def _indent(stack: list[str]) -> list[str]:
    if not stack:
        return ["    (no Python frames outside torch and fabric)"]
    return ["  " + line for block in stack for line in block.rstrip("\n").split("\n")]


def _ranks(ranks: Any) -> str:
    return ", ".join(map(str, ranks)) or "none"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_WATCH: _Watch | None = None
_LOCK = threading.Lock()
