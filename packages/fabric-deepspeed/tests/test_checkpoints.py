"""DeepSpeed checkpoints: exact resume in fresh processes, consolidation to a plain state dict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from common import model
from conftest import launch

from fabric_deepspeed import consolidate_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepspeed-checkpoints")
    launch("checkpoint.py", str(out), "save")
    return out


def test_resume_in_fresh_processes_gives_the_exact_next_losses(saved):
    launch("checkpoint.py", str(saved), "resume")


def test_consolidated_checkpoint_loads_into_the_plain_model(saved):
    state = consolidate_checkpoint(saved / "ds2")
    assert state.keys() == {"model", "optimizer", "step", "meta"} and state["step"] == 3
    plain = model()
    plain.load_state_dict(state["model"])
    for name, tensor in torch.load(saved / "saved2.pt").items():
        assert torch.equal(plain.state_dict()[name], tensor), name


def test_fabric_checkpoint_consolidate_command(saved, tmp_path):
    output = tmp_path / "consolidated.pt"
    result = subprocess.run(
        [sys.executable, "-m", "fabric_core", "checkpoint", "consolidate", str(saved / "ds3"), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "from the deepspeed checkpoint" in result.stdout
    state = torch.load(output)
    plain = model()
    plain.load_state_dict(state["model"])
    for name, tensor in torch.load(saved / "saved3.pt").items():
        assert torch.equal(plain.state_dict()[name], tensor), name
