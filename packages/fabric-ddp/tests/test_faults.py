"""Surviving faults on 2 CPU processes (gloo) under `fabric run`: a dead rank, a preemption, a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from conftest import SCRIPTS
from resume_common import reference_parameters
from test_ddp import leftover_processes

FABRIC_RUN = [sys.executable, "-m", "fabric_core", "run", "--devices", "2"]


def fabric_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fabric")]


def test_a_dead_rank_and_a_preemption_then_the_run_finishes_as_if_uninterrupted(tmp_path):
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    out.mkdir()
    script = [str(SCRIPTS / "resume.py"), str(checkpoints), str(out)]
    # 1. rank 1 dies after step 5 (first attempt only): the agent restarts both ranks, which resume
    # from step 4; from step 8 on the test preempts the job: the ranks save, the launcher exits 143.
    job = subprocess.Popen(
        [*FABRIC_RUN, "--max-restarts", "1", *script, "--die-at", "5", "--pause-at", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "paused").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.poll() is None, job.communicate()
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 143, stderr
    assert fabric_lines(stderr) == [
        "fabric run: a worker failed (its error is above); restarting all workers (restart 1 of 1).",
        "fabric run: received SIGTERM and passed it on to the 2 local worker(s); they exited within the 25 s "
        "grace period. Exit status 143.",
    ], stderr
    after_restart = stderr.split("restarting all workers")[1]
    assert "Traceback" not in after_restart, stderr
    events = (out / "events.txt").read_text().splitlines()
    assert events[:2] == ["attempt 0 starts at step 0", "attempt 1 starts at step 4"], events
    assert len(events) == 3 and events[2].startswith("preempted by SIGTERM after step "), events
    preempted_at = int(events[2].rsplit(" ", 1)[1])
    assert len(list(checkpoints.iterdir())) == 2  # keep=2: older checkpoints were deleted
    # 2. the job is submitted again: it resumes from the preemption's checkpoint and finishes.
    result = subprocess.run([*FABRIC_RUN, *script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    events = (out / "events.txt").read_text().splitlines()
    assert events[3:] == [f"attempt 0 starts at step {preempted_at}", "finished"], events
    trained = torch.load(out / "params.pt")
    for name, expected in reference_parameters().items():
        torch.testing.assert_close(trained[name], expected, rtol=0, atol=1e-5, msg=name)


def test_a_skipped_collective_fails_on_every_rank_naming_the_missing_rank(tmp_path):
    marker = f"fabric-hang-test-{os.getpid()}"
    started = time.monotonic()
    result = subprocess.run(
        [*FABRIC_RUN, str(SCRIPTS / "hang.py"), marker], capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    stderr = result.stderr
    # rank 0 raises; rank 1, which never came, prints the same report from its watch thread
    for rank in (0, 1):
        assert (
            f"CollectiveTimeoutError: Rank {rank}: all_reduce (collective #2) timed out after 3.0 s: "
            "rank(s) 1 did not arrive; rank(s) 0 waited for it." in stderr
        ), stderr
    assert "in evaluate\n" in stderr and "time.sleep(60)" in stderr  # what rank 1 was doing
    assert "Rank 0 waits in all_reduce at:" in stderr
    assert fabric_lines(stderr) == [
        "fabric run: Rank 1 (local rank 1) did not arrive at all_reduce; rank(s) 0 waited for it. "
        "See the output above for the error."
    ], stderr
    assert elapsed < 60, f"the run took {elapsed:.1f}s to stop"
    assert leftover_processes(marker) == []
