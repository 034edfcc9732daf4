"""DeepSpeed on 2 CPU processes (gloo): ZeRO stages, offload and bf16 against a single-process run.

Two launches run everything (a launch costs most of the time): ``zero`` trains under
stages 1-3 and runs the loop of ``scripts/one_loop.py`` at each of them, ``variants`` the
offload, ``zero.Init`` and bf16 cases and the loop at stage 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from common import model, reference_parameters
from conftest import launch
from one_loop import ACCUMULATE, MAX_NORM, RESUME_AT, STEPS, reference

STAGES = (1, 2, 3)


@pytest.fixture(scope="module")
def params_reference() -> dict[str, torch.Tensor]:
    return reference_parameters()


@pytest.fixture(scope="module")
def loop_reference() -> dict[str, Any]:
    return reference()


@pytest.fixture(scope="module")
def zero(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zero")
    launch("train.py", str(out), "stage1", "stage2", "stage3", *(f"loop{stage}" for stage in STAGES))
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("variants")
    launch("train.py", str(out), "offload2", "offload3", "init3", "bf16", "loop0")
    return out


def assert_matches(trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], atol: float) -> None:
    assert trained.keys() == reference.keys()
    for name, expected in reference.items():
        torch.testing.assert_close(trained[name], expected, rtol=0, atol=atol, msg=name)
    assert not torch.equal(trained["0.weight"], model().state_dict()["0.weight"]), "nothing was trained"


def assert_same_loop(result: dict[str, Any], reference: dict[str, Any]) -> None:
    """The loop's losses, clip norms and learning rates equal one process's (2e-4), and resume equals the run (1e-6)."""
    full = result["full"]
    for key in ("losses", "norms", "lrs"):
        assert len(full[key]) == STEPS
        torch.testing.assert_close(full[key], reference["full"][key], rtol=2e-4, atol=0, msg=key)
        torch.testing.assert_close(result["resume"][key], full[key][RESUME_AT:], rtol=1e-6, atol=0, msg=key)
    assert max(reference["full"]["norms"]) > MAX_NORM, "the clip never bit"
    assert full["lrs"][1] < full["lrs"][0], "the scheduler did not drive the learning rate"
    assert_matches(result["value"], reference["value"], atol=1e-6)


def test_zero_stages_1_2_3_reach_the_parameters_of_one_process(zero, params_reference):
    for stage in STAGES:
        result = torch.load(zero / f"stage{stage}.pt")
        assert result["precision"] == "32-true" and result["dtype"] == torch.float32
        assert_matches(result["params"], params_reference, atol=1e-5)


@pytest.mark.parametrize("stage", STAGES)
def test_the_loop_gives_the_losses_of_one_process(zero, loop_reference, stage):
    """Accumulation with no_backward_sync, clip_gradients, LambdaLR on the returned optimizer, save/load."""
    assert_same_loop(torch.load(zero / f"loop{stage}.pt"), loop_reference)


def test_no_backward_sync_warns_once_where_zero_cannot_skip_the_reduction(zero):
    stage1 = torch.load(zero / "loop1.pt")
    assert stage1["full_warnings"] == stage1["resume_warnings"] == [], "stage 1 skips the reduction silently"
    for stage in (2, 3):
        result = torch.load(zero / f"loop{stage}.pt")
        said = [message for message in result["full_warnings"] if "no_backward_sync" in message]
        assert said == [
            f"fabric.no_backward_sync() cannot skip the gradient synchronisation under DeepSpeed ZeRO stage {stage}, "
            "which reduce-scatters the gradients in every backward pass to partition them. Every micro-batch is "
            "synchronised instead: the accumulated gradients are the same, only the communication is not saved."
        ], f"said {len(said)} times over {STEPS * (ACCUMULATE - 1)} blocks"
        assert result["resume_warnings"] == [], "a second Fabric in the same process said it again"


def test_offload_zero_init_and_bf16_train(variants, params_reference):
    for case in ("offload2", "offload3", "init3"):
        assert_matches(torch.load(variants / f"{case}.pt")["params"], params_reference, atol=1e-5)
    bf16 = torch.load(variants / "bf16.pt")
    assert bf16["precision"] == "bf16-mixed" and bf16["dtype"] == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(bf16["losses"])))
    assert_matches(bf16["params"], params_reference, atol=5e-2)


def test_the_loop_at_stage_0_and_a_norm_known_only_in_the_step(variants, loop_reference):
    result = torch.load(variants / "loop0.pt")
    assert_same_loop(result, loop_reference)
    deferred = result["deferred"]
    assert deferred["before"] != deferred["before"], "a norm DeepSpeed had not computed yet was returned"
    assert deferred["after"] == pytest.approx(deferred["engine"], rel=1e-6)
    assert any("fills it in" in message for message in result["deferred_warnings"])
