"""Checkpoints that travel: DeepSpeed directories load under a plain Fabric, plain files and DCP under DeepSpeed.

Each side must continue with the next-step losses of one uninterrupted single-device run
(fp32), which this process computes; the 2-process launch (``scripts/interchange.py``)
trains and saves under ZeRO 2 and 3 and loads the other strategies' checkpoints.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from common import PER_RANK_BATCH, WORLD_SIZE, dataset, model
from conftest import launch
from interchange import NEXT, SAVED, TOLERANCE, make_optimizer, make_scheduler
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from torch.utils.data import DataLoader

from fabric_core import Fabric
from fabric_core.io.manifest import read_manifest
from fabric_deepspeed import consolidate_checkpoint
from fabric_deepspeed._interchange import name_keyed


def train(net: Any, opt: Any, scheduler: Any, batches: list[Any]) -> list[float]:
    losses = []
    for x, y in batches:
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        scheduler.step()
        losses.append(loss.item())
    return losses


def batches() -> list[Any]:
    """The batches of both ranks together, step by step."""
    return list(DataLoader(dataset(), batch_size=WORLD_SIZE * PER_RANK_BATCH))[: SAVED + NEXT]


def plain_fabric(seed: int) -> tuple[Fabric, Any, Any, Any]:
    fabric = Fabric(accelerator="cpu", devices=1)
    net = model(seed=seed)
    net, opt = fabric.setup(net, make_optimizer(net.parameters()))
    return fabric, net, opt, make_scheduler(opt)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The uninterrupted single-device run, its checkpoints at step ``SAVED``, then the DeepSpeed launch."""
    out = tmp_path_factory.mktemp("interchange")
    fabric, net, opt, scheduler = plain_fabric(seed=1)
    data = batches()
    losses = train(net, opt, scheduler, data[:SAVED])
    fabric.save(out / "single.pt", {"model": net, "optimizer": opt, "scheduler": scheduler, "step": SAVED})
    # The name-keyed form FSDP saves; a copy, as its tensors are the optimizer's own (stepped on below).
    named = copy.deepcopy(get_optimizer_state_dict(net.module, opt.optimizer))
    sharded = {"model": net.module.state_dict(), "optimizer": named, "scheduler": scheduler.state_dict()}
    with warnings.catch_warnings():  # "torch.distributed is disabled": one process writes it, on purpose
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({**sharded, "step": SAVED}, storage_writer=dcp.FileSystemWriter(out / "dcp"), no_dist=True)
    at_save = {"optimizer": named, "scheduler": copy.deepcopy(scheduler.state_dict())}
    losses += train(net, opt, scheduler, data[SAVED:])
    torch.save(losses, out / "reference.pt")
    launch("interchange.py", str(out))
    return out, {"losses": losses, **at_save}


def test_deepspeed_continues_from_a_single_file_a_dcp_directory_and_another_stage(saved):
    out, _ = saved  # the launch checked the losses; here: the directories it saved, with their manifests
    for stage in (2, 3):
        manifest = read_manifest(out / f"ds{stage}")
        assert manifest is not None and (manifest.format, manifest.world_size) == ("deepspeed", WORLD_SIZE)
        assert (out / f"ds{stage}" / "latest").is_file()


@pytest.mark.parametrize("stage", [2, 3])
def test_the_consolidated_optimizer_state_is_name_keyed_and_full(saved, stage):
    out, reference = saved
    state = consolidate_checkpoint(out / f"ds{stage}")
    assert state.keys() == {"model", "optimizer", "scheduler", "step"} and state["step"] == SAVED
    assert state["scheduler"] == reference["scheduler"]
    optimizer, expected = state["optimizer"], reference["optimizer"]
    assert (
        list(optimizer["state"])
        == list(expected["state"])
        == [name for name, _ in model().named_parameters()]
    )
    for name, entry in expected["state"].items():
        assert optimizer["state"][name].keys() == entry.keys(), name
        for key, value in entry.items():
            torch.testing.assert_close(optimizer["state"][name][key], value, rtol=1e-4, atol=1e-8, msg=key)
    assert optimizer["param_groups"] == expected["param_groups"]


@pytest.mark.parametrize("stage", [2, 3])
def test_a_plain_fabric_continues_from_a_deepspeed_directory(saved, stage):
    out, reference = saved
    fabric, net, opt, scheduler = plain_fabric(seed=7)
    state = {"model": net, "optimizer": opt, "scheduler": scheduler, "step": 0}
    assert fabric.load(out / f"ds{stage}", state) == {} and state["step"] == SAVED
    losses = train(net, opt, scheduler, batches()[SAVED:])
    worst = max(abs(a - b) for a, b in zip(losses, reference["losses"][SAVED:], strict=True))
    assert worst <= TOLERANCE, (losses, reference["losses"][SAVED:])


def test_an_index_keyed_optimizer_state_is_named_through_the_groups_it_was_built_with():
    net = model()
    opt = make_optimizer(net.parameters())
    train(net, opt, make_scheduler(opt), batches()[:1])
    names = [name for name, _ in net.named_parameters()]
    named = name_keyed(opt.state_dict(), [names])
    expected = get_optimizer_state_dict(net, opt)
    assert (
        named["param_groups"] == expected["param_groups"]
        and named["state"].keys() == expected["state"].keys()
    )
    assert named["state"]["2.bias"]["exp_avg"] is opt.state_dict()["state"][3]["exp_avg"]
    assert name_keyed(expected, [names]) == expected  # name-keyed already
    mismatch = r"1 parameter group\(s\) of \[4\] parameters, but this optimizer has 2 of \[2, 2\]"
    with pytest.raises(ValueError, match=mismatch):
        name_keyed(opt.state_dict(), [names[:2], names[2:]])
