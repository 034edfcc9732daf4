"""What runs on every rank: the checks in order, each under a watchdog, results to a file.

Rank ``r`` writes ``rank-<r>.json`` in the plan's results directory after every check, so
the launching process learns how far each rank got even when a rank crashes or hangs. A
rank whose check exceeds the timeout records that and exits, which makes the launcher stop
the other ranks instead of waiting forever in a collective.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from fabric_core.testing._checks import CHECKS
from fabric_core.testing._expect import CheckSkipped
from fabric_core.testing._plan import Plan

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.testing.conformance import StrategySpec

__all__ = ["TIMEOUT_EXIT_CODE", "agent_main", "result_path", "run_checks"]

TIMEOUT_EXIT_CODE = 75
"""The exit status of a rank that gave up on a check that exceeded the timeout."""


def result_path(results_dir: str, rank: int | str) -> str:
    """Where rank ``rank`` records its results."""
    return os.path.join(results_dir, f"rank-{rank}.json")


class _Recorder:
    """Keeps one rank's results and rewrites its file (atomically) after every change."""

    def __init__(self, results_dir: str, rank: int | str) -> None:
        self._path = result_path(results_dir, rank)
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "checks": {}, "error": ""}

    def record(self, name: str, status: str, message: str = "", **extra: Any) -> None:
        with self._lock:
            self.data["checks"][name] = {"status": status, "message": message, **extra}
            self._write()

    def error(self, message: str) -> None:
        with self._lock:
            self.data["error"] = message
            self._write()

    def _write(self) -> None:
        temporary = f"{self._path}.tmp"
        with open(temporary, "w") as file:
            json.dump(self.data, file)
        os.replace(temporary, self._path)


_BACKSTOP_MARGIN = 30.0
"""Seconds after the watchdog's deadline that `_arm_backstop` ends the process."""


def _arm_backstop(timeout: float) -> None:
    """(Re)start faulthandler's timer: past ``timeout`` plus a margin, dump every thread's stack and exit.

    The watchdog is a Python thread: a main thread stuck in C code that holds the GIL
    (or a deadlock the fork inherited) stops it, and the rank then hangs until the test
    runner's limit. faulthandler's timer is a C thread that needs no GIL, so the rank
    still ends, with its stacks on stderr. Each call replaces the previous timer.
    """
    faulthandler.dump_traceback_later(timeout + _BACKSTOP_MARGIN, exit=True)


class _Watchdog(threading.Thread):
    """Exits the process when a check runs past its deadline, after recording which one."""

    def __init__(self, timeout: float, recorder: _Recorder) -> None:
        super().__init__(name="fabric-conformance-watchdog", daemon=True)
        self._timeout = timeout
        self._recorder = recorder
        self._condition = threading.Condition()
        self._main = threading.main_thread().ident
        self._check: str | None = None
        self._deadline: float | None = None
        self._stopped = False

    def arm(self, check: str) -> None:
        with self._condition:
            self._check, self._deadline = check, time.monotonic() + self._timeout
            self._condition.notify()

    def disarm(self) -> None:
        with self._condition:
            self._deadline = None
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def run(self) -> None:
        with self._condition:
            while not self._stopped:
                if self._deadline is None:
                    self._condition.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                self._recorder.record(
                    str(self._check),
                    "timed out",
                    f"did not finish within {self._timeout:g} s on this rank (a collective probably waited "
                    f"for a rank that never joined it); it was at {self._where()}",
                )
                os._exit(TIMEOUT_EXIT_CODE)

    def _where(self) -> str:
        frame = sys._current_frames().get(self._main) if self._main is not None else None
        if frame is None:
            return "an unknown place"
        frames = traceback.extract_stack(frame)[-4:]
        return "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames)


def run_checks(fabric: Fabric, plan: Plan) -> None:
    """Run the plan's checks on this rank (the function that ``fabric.launch`` runs)."""
    recorder = _Recorder(plan.results_dir, fabric.global_rank)
    watchdog = _Watchdog(plan.timeout, recorder) if os.getpid() != plan.launcher_pid else None
    if watchdog is not None:
        watchdog.start()
    for name in plan.checks:
        if CHECKS[name].where != "ranks":
            continue
        recorder.record(name, "running")
        if watchdog is not None:
            watchdog.arm(name)
            _arm_backstop(plan.timeout)
        start = time.perf_counter()
        try:
            observations = CHECKS[name].run(fabric, plan) or {}
        except CheckSkipped as skipped:
            recorder.record(name, "skipped", str(skipped))
        except Exception as error:
            recorder.record(name, "failed", describe_error(error), seconds=time.perf_counter() - start)
        else:
            recorder.record(name, "passed", observations=observations, seconds=time.perf_counter() - start)
        finally:
            if watchdog is not None:
                watchdog.disarm()
    if watchdog is not None:
        watchdog.stop()


def agent_main(runs: list[tuple[StrategySpec, Plan]]) -> None:
    """The worker of a launch by the elastic agent: for each run, build its ``Fabric`` here and run its checks.

    Several runs share one launch one after another (see
    `run_together`): each strategy forms the process group in
    its ``setup_environment`` and its ``teardown`` check destroys it; a group a run left
    behind is destroyed before the next run. Every run after the first forms its group
    through a store of its own (`_fresh_rendezvous`).
    """
    import torch.distributed as dist

    from fabric_core.launchers.agent import fit_thread_pools

    fit_thread_pools()
    agent_port = int(os.environ.get("MASTER_PORT", "0"))
    for index, (spec, plan) in enumerate(runs):
        _arm_backstop(plan.timeout)  # forming the process group is outside any check
        if index:
            _fresh_rendezvous(agent_port, index)
        try:
            fabric = spec.build_fabric()
        except Exception as error:
            _Recorder(plan.results_dir, os.environ.get("RANK", "unknown")).error(
                f"building the strategy failed: {describe_error(error)}"
            )
            if len(runs) == 1:
                raise
            continue
        fabric.launch(run_checks, plan)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


def _fresh_rendezvous(agent_port: int, index: int) -> None:
    """Point ``MASTER_PORT`` at a new store that rank 0 hosts, for the ``index``-th run of a launch.

    Workers of the elastic agent form their process group through the agent's store, whose
    keys outlive a destroyed group: a second group formed there would read the first
    one's addresses and barrier counts. Rank 0 picks a free port and hands it to the
    others through the agent's store; the strategy's ``init_process_group`` then starts a
    store there (``TORCHELASTIC_USE_AGENT_STORE=False``), as outside an agent.
    """
    from datetime import timedelta

    from torch.distributed import TCPStore

    from fabric_core.environments.local import find_free_port

    agent_store = TCPStore(
        os.environ["MASTER_ADDR"], agent_port, is_master=False, timeout=timedelta(seconds=120)
    )
    key = f"fabric-conformance/run-{index}/port"
    if int(os.environ["RANK"]) == 0:
        agent_store.set(key, str(find_free_port()))
    os.environ["MASTER_PORT"] = agent_store.get(key).decode()
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = str(False)


def describe_error(error: BaseException) -> str:
    """An assertion's message, or an exception's type, message and the last frames that raised it."""
    if isinstance(error, AssertionError) and str(error):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames)
    return f"{type(error).__name__}: {error} (at {where})" if where else f"{type(error).__name__}: {error}"
