"""run_process leaves no process behind: not on a timeout, not when the command exits first."""

from __future__ import annotations

import os
import sys
import time

import pytest

from fabric_core.testing import ProcessTimeout, run_process

# Starts a child that sleeps for a minute, prints its pid, then waits for it (or exits at once).
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "wait":
    child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of an exited parent is reaped by init; until then it is a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_timed_out_command_is_killed_with_the_processes_it_started() -> None:
    with pytest.raises(ProcessTimeout, match="ran past 3 s") as caught:
        run_process([sys.executable, "-c", PARENT, "wait"], timeout=3)

    output = caught.value.output
    child = int(output.split()[0])
    assert "to stderr" in output
    assert _gone(child)
    # Before the kill, the command and its child each printed where they were stuck (the
    # two dumps go to one pipe at the same time, so their lines may interleave).
    assert output.count("Fatal Python error: Aborted") == 2, output
    assert "subprocess.py" in output and "<module>" in output, output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_processes_left_by_a_finished_command_are_killed() -> None:
    result = run_process([sys.executable, "-c", PARENT, "exit"], timeout=30)

    assert result.returncode == 0 and result.stderr == "to stderr\n"
    assert _gone(int(result.stdout.split()[0]))


def test_merged_output_keeps_the_order_of_writing() -> None:
    code = "import sys; print('one', flush=True); print('two', file=sys.stderr, flush=True); print('three')"
    result = run_process([sys.executable, "-c", code], timeout=30, merge_output=True)

    assert result.stdout.split() == ["one", "two", "three"] and result.stderr == ""
