"""``xla_fsdp`` with one device: torch_xla's FSDP wrapper trains like plain PyTorch; checkpoints in both forms."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel, consolidate_sharded_state_dicts
from xla_helpers import assert_close_states, cpu_state, make_model, make_optimizer, reference_run, train

from fabric_core import Fabric
from fabric_core.cli import main as cli
from fabric_xla import XLAFSDPStrategy
from fabric_xla._fsdp_state import consolidate_shards, gather_full_state_dict, shard_full_state_dict


def setup(fabric: Fabric, kind: str = "sgd") -> tuple[nn.Module, torch.optim.Optimizer]:
    model = fabric.setup_module(make_model())
    return model, fabric.setup_optimizers(make_optimizer(model, kind))


@pytest.fixture
def fabric() -> Fabric:
    fabric = Fabric(strategy=XLAFSDPStrategy(auto_wrap_policy={nn.Linear}), devices=1)
    fabric.launch()
    return fabric


@pytest.mark.parametrize(
    "strategy",
    [
        "xla_fsdp",
        XLAFSDPStrategy(auto_wrap_policy={nn.Linear}, activation_checkpointing_policy={nn.Linear}),
        XLAFSDPStrategy(auto_wrap_policy=functools.partial(lambda *a, **k: True), flatten_parameters=True),
    ],
    ids=["root-only", "per-layer-with-checkpointing", "flat-parameters"],
)
def test_training_matches_the_cpu_reference(strategy):
    expected, expected_losses = reference_run("adam")
    fabric = Fabric(strategy=strategy, devices=1)
    model, optimizer = setup(fabric, "adam")
    assert isinstance(model._forward_module, XlaFullyShardedDataParallel)
    assert all(getattr(p, "_is_sharded", False) for p in optimizer.param_groups[0]["params"])
    assert train(fabric, model, optimizer) == pytest.approx(expected_losses, rel=1e-4)
    assert_close_states(gather_full_state_dict(model._forward_module, keep=True), expected)


def test_set_up_order_is_explained():
    fabric = Fabric(strategy="xla_fsdp", devices=1)
    model = make_model()
    with pytest.raises(
        ValueError, match=r"(?s)optimizer must be created afterwards.*fabric.setup_module\(model\)"
    ):
        fabric.setup(model, make_optimizer(model))
    stale = make_optimizer(model)
    fabric.setup_module(model)
    with pytest.raises(ValueError, match=r"does not hold the sharded parameters"):
        fabric.setup_optimizers(stale)


def test_clipping_uses_the_wrappers_global_norm(fabric):
    reference = make_model()
    model, optimizer = setup(fabric)
    batch = torch.randn(4, 4)
    reference(batch).pow(2).mean().backward()
    fabric.backward(model(fabric.to_device(batch)).pow(2).mean())
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
    norm = fabric.clip_gradients(model, optimizer, max_norm=0.01)
    torch.testing.assert_close(norm.cpu(), expected, rtol=1e-4, atol=1e-6)
    with fabric.no_backward_sync(model):
        fabric.backward(model(fabric.to_device(batch)).pow(2).mean())


def test_sharded_checkpoint_resumes_training_and_consolidates(tmp_path, fabric):
    model, optimizer = setup(fabric, "adam")
    train(fabric, model, optimizer, steps=2)
    fabric.save(tmp_path / "ckpt", {"model": model, "optimizer": optimizer, "step": 2})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint_rank-00000-of-00001.pt"]

    resumed = Fabric(strategy=XLAFSDPStrategy(auto_wrap_policy={nn.Linear}), devices=1)
    other, other_optimizer = setup(resumed, "adam")
    state = {"model": other, "optimizer": other_optimizer, "step": 0}
    assert resumed.load(tmp_path / "ckpt", state) == {}
    assert state["step"] == 2
    assert train(resumed, other, other_optimizer, steps=2) == pytest.approx(
        train(fabric, model, optimizer, steps=2)
    )

    assert cli(["checkpoint", "consolidate", str(tmp_path / "ckpt"), str(tmp_path / "full.pt")]) == 0
    consolidated = torch.load(tmp_path / "full.pt")
    assert set(consolidated) == {"model", "step"}
    plain = make_model()
    plain.load_state_dict(consolidated["model"])


def test_sharded_checkpoint_from_another_world_size_is_explained(tmp_path, fabric):
    (tmp_path / "ckpt").mkdir()
    torch.save({}, tmp_path / "ckpt" / "checkpoint_rank-00000-of-00002.pt")
    model, _ = setup(fabric)
    with pytest.raises(
        FileNotFoundError, match=r"has no file for rank 0 of 1.*-of-00002.pt.*fabric checkpoint consolidate"
    ):
        fabric.load(tmp_path / "ckpt", {"model": model})


def test_full_checkpoint_interchanges_with_plain_pytorch(tmp_path):
    expected, _ = reference_run()
    fabric = Fabric(strategy=XLAFSDPStrategy(state_dict_type="full", auto_wrap_policy={nn.Linear}), devices=1)
    model, optimizer = setup(fabric)
    train(fabric, model, optimizer)
    fabric.save(tmp_path / "full.pt", {"model": model, "epoch": 4})
    saved = torch.load(tmp_path / "full.pt")
    assert saved["epoch"] == 4
    assert_close_states(saved["model"], expected)

    with pytest.raises(ValueError, match=r"saves the model weights only.*state_dict_type='sharded'"):
        fabric.save(tmp_path / "with-optimizer.pt", {"model": model, "optimizer": optimizer})

    single = Fabric(strategy="single_xla")
    plain = single.setup(make_model())
    single.load(tmp_path / "full.pt", {"model": plain})
    assert_close_states(cpu_state(plain), expected)

    fresh = Fabric(strategy="xla_fsdp", devices=1)
    other, other_optimizer = setup(fresh)
    assert fresh.load(tmp_path / "full.pt", {"model": other}) == {"epoch": 4}
    assert_close_states(gather_full_state_dict(other._forward_module, keep=True), expected)
    torch.save(
        {"model": expected, "optimizer": make_optimizer(make_model()).state_dict()}, tmp_path / "plain.pt"
    )
    with pytest.raises(ValueError, match=r"'optimizer' in the single-file checkpoint.*cannot take"):
        fresh.load(tmp_path / "plain.pt", {"model": other, "optimizer": other_optimizer})


@pytest.mark.parametrize("dim0", [False, True], ids=["flat-shards", "row-shards"])
def test_cutting_and_consolidating_invert_each_other_like_torch_xla(dim0):
    """For 3 simulated ranks: shards cut from a full state dict consolidate back to it (ours and torch_xla's)."""
    full = {"0.weight": torch.randn(16, 4), "0.bias": torch.randn(16), "2.weight": torch.randn(3, 16)}
    shard_info = {}
    templates = []
    for name, tensor in full.items():
        key = f"_fsdp_shard.{name}"
        shard_info[key] = {"_orig_size": tensor.shape, "_orig_name": name}
    world_size = 3
    for _ in range(world_size):
        template = {}
        for name, tensor in full.items():
            if dim0 and tensor.dim() > 1:
                template[f"_fsdp_shard.{name}"] = torch.zeros(
                    -(-tensor.shape[0] // world_size), *tensor.shape[1:]
                )
            else:
                template[f"_fsdp_shard.{name}"] = torch.zeros(-(-tensor.numel() // (world_size * 8)) * 8)
        templates.append(template)
    metadata = {
        "shard_info": {"": shard_info},
        "flatten_info": {},
        "buffer_info": {},
        "world_size": world_size,
    }
    shards = [
        shard_full_state_dict(full, templates[rank], {**metadata, "rank": rank}) for rank in range(world_size)
    ]
    for back in (consolidate_sharded_state_dicts(shards, metadata), consolidate_shards(shards, metadata)):
        assert sorted(back) == sorted(full)
        for name, tensor in full.items():
            torch.testing.assert_close(back[name], tensor, rtol=0, atol=0)
    with pytest.raises(KeyError, match=r"Missing: 2.weight.*strict=False"):
        shard_full_state_dict(
            {k: v for k, v in full.items() if k != "2.weight"}, templates[0], {**metadata, "rank": 0}
        )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"state_dict_type='dcp' is not one of 'full', 'sharded'"):
        XLAFSDPStrategy(state_dict_type="dcp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"activation_checkpointing_policy needs auto_wrap_policy"):
        XLAFSDPStrategy(activation_checkpointing_policy={nn.Linear})
    with pytest.raises(TypeError, match=r"unknown argument\(s\) bucket_cap_mb.*reshard_after_forward"):
        XLAFSDPStrategy(bucket_cap_mb=25)


def test_consolidation_of_flattened_parameters_matches_torch_xla():
    flat = Fabric(strategy=XLAFSDPStrategy(flatten_parameters=True), devices=1)
    model = flat.setup_module(make_model())._forward_module
    shards = [{key: value.cpu() for key, value in model.state_dict().items()}]
    ours = consolidate_shards(shards, model.get_shard_metadata())
    theirs = consolidate_sharded_state_dicts(shards, model.get_shard_metadata())
    assert sorted(ours) == sorted(theirs) == sorted(make_model().state_dict())
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
