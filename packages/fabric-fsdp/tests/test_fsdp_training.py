"""FSDP on 2 CPU processes (gloo) trains to the parameters one process reaches with twice the batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SCRIPTS
from fsdp_common import model, reference_parameters, run_script

EXACT = ["full_shard", "full_shard_wrap", "shard_grad_op", "shard_grad_op_wrap", "hybrid", "no_shard"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch trains every configuration (a launch costs seconds; a configuration, less)."""
    out_dir = tmp_path_factory.mktemp("fsdp_train")
    run_script(str(SCRIPTS / "fsdp_train.py"), str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def facts(trained: Path) -> dict[str, Any]:
    return json.loads((trained / "facts.json").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return reference_parameters()


def assert_matches(path: Path, expected: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    trained = torch.load(path)
    assert trained.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=atol, msg=name)
    untrained = model().state_dict()
    assert not torch.allclose(trained["0.weight"], untrained["0.weight"], atol=1e-3), "nothing was trained"


@pytest.mark.parametrize("config", EXACT)
def test_sharding_strategies_and_wrap_policies_match_one_process(trained, reference, config):
    assert_matches(trained / f"{config}.pt", reference)


def test_wrap_policy_shards_each_selected_layer(facts):
    assert facts["wrapped"] == ["FSDPSequential", "FSDPBlock", "FSDPBlock"]


def test_accumulation_without_sync_and_clipping_of_sharded_gradients(trained):
    # two half micro-batches under no_backward_sync, clip_gradients on the shards, activation
    # checkpointing, forward prefetching and the FSDP1 compatibility flags: the large-batch run, clipped
    assert_matches(trained / "accumulate_clip.pt", reference_parameters(clip=True))


def test_optimizer_created_after_setup_module(trained, reference):
    assert_matches(trained / "staged_setup.pt", reference)


@pytest.mark.parametrize("config", ["cpu_offload", "cpu_offload_name"])
def test_cpu_offload_runs_and_matches(trained, reference, facts, config):
    assert "cpu_offload=True" in facts["offload_strategy"]
    assert_matches(trained / f"{config}.pt", reference)


def test_meta_device_init_materialises_local_shards_only(trained, reference, facts):
    meta = facts["meta_init"]
    assert meta["built_on_meta"] and meta["init_equals_plain_init"]
    assert meta["local_shapes"]["0.weight"] == [8, 8]  # 15 rows: 8 on rank 0, 7 on rank 1
    assert meta["local_shapes"]["1.linear.bias"] == [8]
    assert_matches(trained / "meta_init.pt", reference)


def test_bf16_mixed_precision_gathers_in_bf16_and_keeps_float32_shards(trained, reference, facts):
    bf16 = facts["bf16"]
    assert bf16["precision"] == "FSDPPrecision"
    assert bf16["compute_dtypes"] == ["torch.bfloat16"]
    assert bf16["shard_dtypes"] == ["torch.float32"]
    assert bf16["output_dtype"] == "torch.float32"
    assert_matches(trained / "bf16_mixed.pt", reference, atol=0.05)


def test_fp16_mixed_precision_scales_with_a_sharded_scaler(facts):
    assert facts["fp16"]["scaler"] == "ShardedGradScaler"
    assert facts["fp16"]["finite"] and facts["fp16"]["scale"] > 0


def test_per_rank_training_memory_is_at_most_055_of_ddp(facts):
    memory = facts["memory"]
    ratios = [fsdp / ddp for fsdp, ddp in zip(memory["fsdp_bytes"], memory["ddp_bytes"])]
    assert all(ratio <= 0.55 for ratio in ratios), (ratios, memory)
