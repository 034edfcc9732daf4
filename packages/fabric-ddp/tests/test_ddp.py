"""DDP on 2 CPU processes (gloo), launched every way a user can: results match one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from common import reference_parameters
from conftest import SCRIPTS

TRAIN = str(SCRIPTS / "ddp_train.py")


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return reference_parameters()


def run(
    *command: str, env: dict[str, str] | None = None, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def assert_matches_reference(out_dir: Path, reference: dict[str, torch.Tensor]) -> None:
    trained = torch.load(out_dir / "params.pt")
    assert trained.keys() == reference.keys()
    for name, expected in reference.items():
        torch.testing.assert_close(trained[name], expected, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(trained["0.weight"], reference_untrained()["0.weight"])


def reference_untrained() -> dict[str, torch.Tensor]:
    from common import model

    return model().state_dict()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("launch", "strategy"), [("script", "ddp"), ("spawn", "ddp_spawn"), ("fork", "ddp_fork")]
)
def test_fabric_launch_matches_one_process_with_twice_the_batch(tmp_path, reference, launch, strategy):
    run(sys.executable, TRAIN, str(tmp_path), "--launch", launch, "--strategy", strategy)
    assert_matches_reference(tmp_path, reference)


def test_gradient_accumulation_without_sync_matches_the_large_batch(tmp_path, reference):
    run(sys.executable, TRAIN, str(tmp_path), "--launch", "fork", "--strategy", "ddp_fork", "--accumulate")
    assert_matches_reference(tmp_path, reference)


def test_fabric_run_matches_one_process(tmp_path, reference):
    run(
        sys.executable,
        "-m",
        "fabric_core",
        "run",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        TRAIN,
        str(tmp_path),
        "--launch",
        "none",
    )
    assert_matches_reference(tmp_path, reference)


def test_same_script_runs_under_torchrun(tmp_path, reference):
    # the script calls fabric.launch(), which joins the processes torchrun started
    run(
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        TRAIN,
        str(tmp_path),
        "--launch",
        "script",
    )
    assert_matches_reference(tmp_path, reference)


def test_two_nodes_on_one_machine(tmp_path, reference):
    port = str(free_port())
    fabric_run = [sys.executable, "-m", "fabric_core", "run", "--accelerator", "cpu", "--devices", "1"]
    fabric_run += ["--num-nodes", "2", "--main-address", "127.0.0.1", "--main-port", port]
    run_together(
        [
            ([*fabric_run, "--node-rank", str(rank), TRAIN, str(tmp_path), "--launch", "none"], {})
            for rank in (0, 1)
        ]
    )
    assert_matches_reference(tmp_path, reference)


def test_slurm_style_environment(tmp_path, reference):
    port = str(free_port())
    common = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "1",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODELIST": "localhost",
        "SLURM_NODEID": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }
    run_together(
        [
            (
                [sys.executable, TRAIN, str(tmp_path), "--launch", "none"],
                {**common, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            )
            for rank in (0, 1)
        ]
    )
    assert_matches_reference(tmp_path, reference)


def run_together(commands: list[tuple[list[str], dict[str, str]]]) -> None:
    """Start every ``(argv, extra environment)`` at once (the processes of one job) and expect all to exit 0."""
    processes = [
        subprocess.Popen(
            argv, env={**os.environ, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for argv, extra in commands
    ]
    outputs = [process.communicate(timeout=150)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), "\n".join(outputs)


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_stops_the_run_and_is_named(tmp_path, how):
    marker = f"fabric-failure-test-{os.getpid()}-{how}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fabric_core", "run", "--devices", "2", str(SCRIPTS / "fail.py"), how, marker],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 30, f"the run took {elapsed:.1f}s to stop"
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fabric run: Rank 1 (local rank 1)"), result.stderr
    # rank 1 is named as the cause; when its exit overlaps rank 0's broken collective, the
    # agent may have stopped it with SIGTERM before it finished exiting with code 1
    expected = (
        ("was killed by SIGKILL",) if how == "kill" else ("exited with code 1", "was killed by SIGTERM")
    )
    assert any(text in last_line.split(";")[0] for text in expected), last_line
    assert leftover_processes(marker) == []


def leftover_processes(marker: str) -> list[int]:
    time.sleep(0.5)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    for pid in found:
        os.kill(pid, signal.SIGKILL)
    return found


def test_comm_hooks_and_post_local_sgd_model_averaging():
    result = run(sys.executable, str(SCRIPTS / "hooks.py"))
    assert "hooks ok" in result.stdout
