"""estimate_memory for DDP agrees with the bytes each process holds (2 forked processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from memory_estimate import OPTIMIZERS, build

from fabric_core.utilities.memory import estimate_memory

SCRIPT = Path(__file__).parent / "scripts" / "memory_estimate.py"
TOLERANCE = 0.05
DDP_ON_3 = ("--strategy", "ddp", "--devices", "3", "--optimizer", "sgd")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    out = tmp_path_factory.mktemp("memory")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return {kind: json.loads((out / f"{kind}.json").read_text()) for kind in OPTIMIZERS}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_replicated_estimate_is_within_5_percent_of_the_real_bytes(measured, optimizer):
    estimate = estimate_memory(build, "ddp", devices=2, optimizer=optimizer)
    real = measured[optimizer]
    assert estimate.world_size == 2
    for kind, value in (
        ("parameters", estimate.parameter_bytes),
        ("gradients", estimate.gradient_bytes),
        ("optimizer", estimate.optimizer_bytes),
    ):
        assert value == pytest.approx(real[kind], rel=TOLERANCE), (kind, value, real[kind])


def test_the_cli_estimates_ddp_at_any_number_of_processes(tmp_path: Path):
    script = tmp_path / "models.py"
    script.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 3)\n")
    result = subprocess.run(
        [sys.executable, "-m", "fabric_core", "estimate", "--model", f"{script}:build", *DDP_ON_3],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "strategy=ddp world_size=3" in result.stdout
