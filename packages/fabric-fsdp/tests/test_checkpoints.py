"""Sharded (DCP) and full FSDP checkpoints: resume at another world size, read with plain torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS
from fsdp_checkpoint import STEPS, batch, continue_run
from fsdp_common import model, optimizer, run_script
from torch import nn

from fabric_core import Fabric
from fabric_core.cli import main as fabric_cli
from fabric_core.io.manifest import read_manifest
from fabric_fsdp import optimizer_state_to_torch

SCRIPT = str(SCRIPTS / "fsdp_checkpoint.py")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("fsdp_checkpoint")
    run_script(SCRIPT, "save", str(out_dir))
    return out_dir


def results(saved: Path) -> dict[str, dict[str, float]]:
    return json.loads((saved / "two_ranks.json").read_text())


def uninterrupted(saved: Path) -> dict[str, float]:
    return results(saved)["uninterrupted"]


def continue_plainly(net: nn.Module, opt: torch.optim.Optimizer) -> dict[str, float]:
    """What one process without fabric computes from the restored model and optimizer."""
    x, y = batch(STEPS)
    next_loss = nn.functional.mse_loss(net(x), y)
    next_loss.backward()
    opt.step()
    x, y = batch(STEPS + 1)
    with torch.no_grad():
        after = nn.functional.mse_loss(net(x), y).item()
    return {"next_loss": next_loss.item(), "loss_after_step": after}


def test_sharded_checkpoint_is_a_dcp_directory_with_one_file_per_rank(saved):
    files = sorted(p.name for p in (saved / "sharded").iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "fabric-manifest.json"]
    assert not any(p.name.startswith(".sharded") for p in saved.iterdir()), "temporary directory left behind"


def test_sharded_save_with_two_ranks_resumes_with_two_ranks_at_exactly_the_uninterrupted_loss(saved):
    # into a model built on the meta device and sharded differently (no wrap policy)
    assert results(saved)["sharded_two_ranks"] == uninterrupted(saved)


def test_sharded_save_with_two_ranks_resumes_in_one_process_at_the_uninterrupted_loss(saved):
    run_script(SCRIPT, "resume", str(saved))
    resumed = json.loads((saved / "one_rank.json").read_text())
    expected = uninterrupted(saved)
    assert resumed["next_loss"] == expected["next_loss"]
    # after one more step: one process sums the batch's gradient in another order than two
    assert resumed["loss_after_step"] == pytest.approx(expected["loss_after_step"], rel=0, abs=1e-6)


def test_asynchronous_saves_hold_the_values_of_the_moment_they_were_made(saved):
    assert results(saved)["async"] == {"async-1": True, "async-2": True}
    assert not any(p.name.startswith(".async") for p in saved.iterdir()), (
        "a partial directory was left behind"
    )
    assert (saved / "async-2" / "fabric-manifest.json").is_file()


def test_full_file_round_trip_inside_fsdp_continues_exactly(saved):
    assert results(saved)["full_file_two_ranks"] == uninterrupted(saved)


def test_full_checkpoint_loads_with_plain_torch_into_an_unwrapped_model(saved):
    checkpoint = torch.load(saved / "full.pt", weights_only=True)
    assert checkpoint["step"] == STEPS
    net = model()
    net.load_state_dict(checkpoint["model"])
    opt = optimizer(net.parameters())
    opt.load_state_dict(checkpoint["optimizer"])  # index-keyed, as Optimizer.state_dict() writes it
    expected = torch.load(saved / "saved_params.pt")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in expected.items())
    result = continue_plainly(net, opt)
    reference = uninterrupted(saved)
    assert result["next_loss"] == pytest.approx(reference["next_loss"], abs=1e-6)
    assert result["loss_after_step"] == pytest.approx(reference["loss_after_step"], abs=1e-6)


def test_consolidated_dcp_checkpoint_loads_into_a_plain_model(saved, tmp_path):
    output = tmp_path / "consolidated.pt"
    assert fabric_cli(["checkpoint", "consolidate", str(saved / "sharded"), str(output)]) == 0
    checkpoint = torch.load(output, weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "step", "extra"}
    assert checkpoint["step"] == STEPS and checkpoint["extra"]["note"] == "hello"
    net = model()
    net.load_state_dict(checkpoint["model"])
    opt = optimizer(net.parameters())
    opt.load_state_dict(optimizer_state_to_torch(checkpoint["optimizer"]))
    result = continue_plainly(net, opt)
    assert result["next_loss"] == pytest.approx(uninterrupted(saved)["next_loss"], abs=1e-6)
    assert result["loss_after_step"] == pytest.approx(uninterrupted(saved)["loss_after_step"], abs=1e-6)


def test_sharded_checkpoint_has_a_manifest_naming_its_writer(saved):
    manifest = read_manifest(saved / "sharded")
    assert manifest is not None
    assert (manifest.format, manifest.strategy, manifest.world_size) == ("dcp", "FSDPStrategy", 2)
    assert manifest.mesh == {"shard": 2}
    assert "saved by FSDPStrategy on 2 processes" in manifest.describe()


@pytest.fixture(scope="module")
def crossed(saved: Path) -> dict[str, dict[str, float]]:
    """The sharded directory resumed on one device (no fsdp), then both at 4 processes."""
    fabric = Fabric(accelerator="cpu", devices=1)
    net = model()
    net, opt = fabric.setup(net, optimizer(net.parameters()))
    state = {"model": net, "optimizer": opt, "step": 0}
    remainder = fabric.load(saved / "sharded", state)
    assert state["step"] == STEPS and remainder["extra"]["note"] == "hello"
    fabric.save(saved / "single.pt", state)
    results = {"single_from_sharded": continue_run(fabric, net, opt)}
    run_script(SCRIPT, "cross", str(saved))
    return {**results, **json.loads((saved / "four_ranks.json").read_text())}


@pytest.mark.parametrize("resumed", ["single_from_sharded", "ddp_from_sharded", "fsdp_from_single_file"])
def test_checkpoints_cross_strategies_and_world_sizes_at_the_uninterrupted_loss(crossed, saved, resumed):
    """fsdp at 2 ranks -> one device without fsdp -> fsdp at 4 ranks; fsdp at 2 -> ddp at 4."""
    expected = uninterrupted(saved)
    assert crossed[resumed]["next_loss"] == expected["next_loss"]  # the same weights, exactly
    # Adam's moments came along: the step after resuming lands where the uninterrupted one does
    assert crossed[resumed]["loss_after_step"] == pytest.approx(expected["loss_after_step"], rel=0, abs=1e-6)
