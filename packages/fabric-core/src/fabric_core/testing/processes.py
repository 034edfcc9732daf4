"""Run a command that starts processes of its own, and leave none of them behind.

A launch (``fabric run``, ``fabric.launch()``, ``torchrun``) starts workers that outlive
their launcher when it is killed: ``subprocess.run(..., timeout=...)`` kills only the
process it started, so a hung collective leaves its workers spinning and every later test
on the machine slower. `run_process` starts the command in a session of its own and, when
it is done (or has timed out, or the caller was interrupted), kills whatever is left of
that session; on a timeout it first has every Python process of the session print its
stacks, so the failure says where the run hung.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["ProcessTimeout", "run_process"]

DIAGNOSTICS = {"PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"}
"""Set for the command unless its environment sets them: stacks on SIGABRT, output not lost in buffers."""
STACK_DUMP_SECONDS = 5.0
"""How long a timed-out command gets to print its stacks before it is killed."""


class ProcessTimeout(AssertionError):
    """A command ran past its time limit; its output so far is in the message and ``output``.

    An ``AssertionError`` so that pytest reports it as the test's failure, with the output.
    """

    def __init__(self, args: Sequence[str], timeout: float, output: str) -> None:
        self.output = output
        super().__init__(
            f"{' '.join(map(str, args))} ran past {timeout:g} s and was killed with every process it "
            f"started. Output so far (last 6000 characters):\n{output[-6000:]}"
        )


def run_process(
    args: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    merge_output: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to completion and return it, like ``subprocess.run(capture_output=True, text=True)``.

    Unlike ``subprocess.run``, every process the command started is killed afterwards, also
    on a timeout, so no launched worker survives a failed test. On a timeout each Python
    process of the command first prints where it is stuck: the command runs with
    ``PYTHONFAULTHANDLER=1`` and ``PYTHONUNBUFFERED=1`` (unless ``env`` sets them), and gets
    ``SIGABRT``, which makes each process dump its threads' Python stacks to stderr, a few
    seconds before the ``SIGKILL``.

    Args:
        args: The command and its arguments.
        timeout: Seconds before the command and its processes are killed.
        env: The environment (the current one when ``None``).
        cwd: The working directory (the current one when ``None``).
        merge_output: Send stderr into stdout (``stderr`` of the result is then empty), so the
            output reads in the order it was written.

    Returns:
        The finished process, with ``stdout`` and ``stderr`` as text.

    Raises:
        ProcessTimeout: The command ran past ``timeout``.
    """
    command = [os.fspath(arg) for arg in args]
    environment = {**DIAGNOSTICS, **(os.environ if env is None else env)}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        text=True,
        env=environment,
        cwd=cwd,
        start_new_session=True,
    )
    # Read in threads and wait for the command itself: a worker it leaves behind holds the
    # pipes open, so reading to the end would wait for that worker too.
    output: dict[str, str] = {}
    readers = [
        threading.Thread(target=_read_all, args=(stream, name, output), daemon=True)
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _signal_session(process.pid, signal.SIGABRT)  # every Python process prints its stacks
        try:
            process.wait(timeout=STACK_DUMP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    finally:
        _signal_session(process.pid, signal.SIGKILL)
    process.wait()
    for reader in readers:
        reader.join()
    stdout, stderr = output.get("stdout", ""), output.get("stderr", "")
    if timed_out:
        raise ProcessTimeout(command, timeout, stdout + stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _read_all(stream: IO[str], name: str, into: dict[str, str]) -> None:
    """Read ``stream`` to its end into ``into[name]``."""
    with stream:
        into[name] = stream.read()


def _signal_session(session_id: int, signal_number: int) -> None:
    """Send a signal to every process left in the session (a process group of the same id)."""
    if not hasattr(os, "killpg"):  # Windows: no sessions; the command's own process is gone
        return
    try:
        os.killpg(session_id, signal_number)
    except (ProcessLookupError, PermissionError):
        pass  # nothing is left
