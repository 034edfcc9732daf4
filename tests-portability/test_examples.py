"""Every script in examples/ runs as the README and its docstring say, with a few steps.

The character-level GPT runs under one process and under ``fabric run --devices 2`` with
each CPU strategy; the three 2-process runs draw the same batches, so their losses agree.
Its FSDP checkpoint (a DCP directory) resumes on one device without FSDP.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from fabric_core.testing.processes import run_process

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHAR_GPT = EXAMPLES / "train_char_gpt.py"
SMALL = ["--steps", "3", "--eval-every", "3", "--batch-size", "4", "--context", "32"]

pytestmark = pytest.mark.timeout(300)


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    result = run_process([sys.executable, *args], cwd=cwd, env=env, timeout=240)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def _launch(strategy: str, script: Path, *script_args: str, cwd: Path) -> str:
    launcher = ["-m", "fabric_core", "run", "--accelerator", "cpu", "--devices", "2", "--strategy", strategy]
    return _run([*launcher, str(script), *script_args], cwd)


def _last_row(run_folder: Path) -> dict[str, str]:
    with (run_folder / "metrics.csv").open() as file:
        return list(csv.DictReader(file))[-1]


def _run_folder(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("run folder: "))
    return Path(line.removeprefix("run folder: ").split()[0])


def test_char_gpt_gives_the_same_losses_under_every_two_process_strategy(tmp_path: Path) -> None:
    losses = {}
    for strategy in ("ddp", "fsdp", "deepspeed_stage_2"):
        stdout = _launch(strategy, CHAR_GPT, *SMALL, "--out", "runs", cwd=tmp_path)
        folder = tmp_path / _run_folder(stdout)
        assert folder == tmp_path / "runs" / strategy / "version_0"
        for name in ("metrics.csv", "curves.png", "checkpoint"):
            assert (folder / name).exists(), f"{strategy}: {name} missing from {sorted(os.listdir(folder))}"
        row = _last_row(folder)
        assert row["step"] == "3" and float(row["tokens_per_sec"]) > 0
        losses[strategy] = (float(row["train/loss"]), float(row["val/loss"]))
    reference = losses["ddp"]
    for strategy, pair in losses.items():
        assert pair == pytest.approx(reference, rel=1e-4), f"{strategy} {pair} vs ddp {reference}"

    # One process continues the FSDP run from its sharded checkpoint.
    checkpoint = tmp_path / "runs" / "fsdp" / "version_0" / "checkpoint"
    resumed = _run(
        [str(CHAR_GPT), *SMALL[2:], "--steps", "5", "--resume", str(checkpoint), "--out", "runs"], tmp_path
    )
    assert f"resumed from {checkpoint} at step 3" in resumed
    assert _last_row(tmp_path / _run_folder(resumed))["step"] == "5"


def test_digits_runs_under_the_launcher_with_two_processes(tmp_path: Path) -> None:
    stdout = _launch("ddp", EXAMPLES / "train_digits.py", "--epochs", "2", cwd=tmp_path)
    assert "epoch  1" in stdout
    assert (tmp_path / "checkpoints" / "digits-DDPStrategy").exists()
