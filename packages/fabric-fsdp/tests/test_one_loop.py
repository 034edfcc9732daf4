"""One loop, only the strategy changed: fsdp and model_parallel at 2 processes equal one process.

The loop accumulates gradients with ``no_backward_sync``, clips them by norm, steps a
``LambdaLR`` built on the optimizer ``fabric.setup`` returned, and resumes from a checkpoint
saved at the middle step (see scripts/one_loop.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SCRIPTS
from fsdp_common import run_script
from one_loop import CONFIGURATIONS, RESUME_AT, STEPS, reference


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out_dir = tmp_path_factory.mktemp("one_loop")
    run_script(str(SCRIPTS / "one_loop.py"), str(out_dir))
    return json.loads((out_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def one_process() -> dict[str, list[float]]:
    return reference()


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_all_reduced_mean_loss_and_clipping_norm_equal_one_process(results, one_process, name):
    run = results[name]["uninterrupted"]
    assert run["losses"] == pytest.approx(one_process["losses"], rel=2e-4)
    # the total norm counts every element of the DTensor gradients once, and comes back as a plain tensor
    assert run["norms"] == pytest.approx(one_process["norms"], rel=2e-4)
    assert run["norm_types"] == ["Tensor:False"]
    assert min(run["norms"]) > 0.1, "the loop is meant to clip at every step"


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_resuming_at_the_middle_step_continues_as_the_uninterrupted_run(results, name):
    result = results[name]
    assert result["resumed_step"] == RESUME_AT
    uninterrupted = result["uninterrupted"]
    assert len(result["resumed"]["losses"]) == STEPS - RESUME_AT
    assert result["resumed"]["losses"] == pytest.approx(uninterrupted["losses"][RESUME_AT:], rel=0, abs=1e-6)
    assert result["resumed"]["norms"] == pytest.approx(uninterrupted["norms"][RESUME_AT:], rel=0, abs=1e-6)
    # the scheduler's state came back with the model and optimizer
    assert result["resumed_lr_after"] == pytest.approx(result["lr_after"], rel=0, abs=1e-12)


def test_activation_checkpointing_true_recomputes_the_wrapped_blocks_in_backward(results):
    forwards = STEPS * 2  # two micro-batches per step
    checkpointed = results["fsdp_wrap_checkpointing"]
    assert checkpointed["root_calls"] == forwards
    assert checkpointed["block_calls"] == [2 * forwards, 2 * forwards]
    plain = results["fsdp"]
    assert plain["root_calls"] == forwards and plain["block_calls"] == [forwards, forwards]


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_setting_up_a_sharded_model_twice_is_refused(results, name):
    assert "already set up" in results[name]["second_setup_error"]


def test_compiled_model_is_sharded_inside_and_checkpoints_carry_the_model_keys(results):
    keys = results["fsdp_compiled"]["checkpoint_keys"]
    assert "model.0.weight" in keys and "model.1.linear.weight" in keys
    assert not [key for key in keys if "_orig_mod" in key]
