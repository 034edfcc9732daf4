"""``fabric.launch(fn)`` through torch_xla's launcher: one device in this process, every TPU core where a TPU is present."""

from __future__ import annotations

import json

import pytest
import torch
from xla_helpers import BATCH, assert_close_states, needs_tpu, reference_run, run_script

STRATEGIES = ("xla", "xla_fsdp")


def check(results: dict[str, dict], world_size: int) -> None:
    expected, expected_losses = reference_run("adam", size=BATCH * world_size)
    for strategy in STRATEGIES:
        run = results[strategy]
        assert run["world_size"] == world_size
        assert run["sum_of_ranks"] == sum(range(world_size))
        assert run["max_rank"] == world_size - 1
        assert run["gathered_ranks"] == list(range(world_size))
        assert run["sum_of_rank_numbers"] == sum(range(world_size))
        assert run["strategy_mean_of_ranks"] == pytest.approx(sum(range(world_size)) / world_size)
        assert run["strategy_gathered_numbers"] == list(range(world_size))
        assert run["broadcast"] == {"from": world_size - 1, "padding": "x" * world_size}
        assert run["sampler"] == {"num_replicas": world_size, "rank": 0}
        assert run["losses"] == pytest.approx(expected_losses, rel=1e-4), strategy
        assert_close_states({k: torch.tensor(v) for k, v in run["state"].items()}, expected)
        assert run["reloaded_world"] == world_size
        assert run["reloaded_state"] == run["state"]


def test_one_device_runs_the_function_in_this_process(tmp_path):
    from launch_train import run_all

    results = json.loads(json.dumps(run_all(1, tmp_path)))
    check(results, world_size=1)
    assert sorted(p.name for p in (tmp_path / "xla_fsdp").iterdir()) == ["checkpoint_rank-00000-of-00001.pt"]


@needs_tpu
def test_every_tpu_core_trains_its_shard_like_one_process_on_the_global_batch(tmp_path):
    results = run_script("launch_train.py", "-1", str(tmp_path), env={"PJRT_DEVICE": "TPU"}, timeout=900)
    world_size = results["xla"]["world_size"]
    assert world_size > 1
    check(results, world_size)
    files = sorted(p.name for p in (tmp_path / "xla_fsdp").iterdir())
    assert files == [f"checkpoint_rank-{r:05d}-of-{world_size:05d}.pt" for r in range(world_size)]
