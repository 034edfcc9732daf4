"""estimate_memory for DeepSpeed ZeRO 1-3 (float32 and bf16-mixed) agrees with DeepSpeed's buffers (2 processes, gloo)."""

from __future__ import annotations

import json

import pytest
from conftest import launch
from memory_estimate import PRECISIONS, STAGES, build

from fabric_core.utilities.memory import estimate_memory

TOLERANCE = 0.05


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    out = tmp_path_factory.mktemp("memory")
    launch("memory_estimate.py", str(out))
    return {path.stem: json.loads(path.read_text()) for path in out.glob("zero*.json")}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("stage", STAGES)
def test_the_estimate_of_each_zero_stage_is_within_5_percent_of_the_real_bytes(measured, stage, precision):
    estimate = estimate_memory(
        build, f"deepspeed_stage_{stage}", devices=2, precision=precision, optimizer="adam"
    )
    real = measured[f"zero{stage}-{precision}"]
    for kind, value in (
        ("parameters", estimate.parameter_bytes),
        ("gradients", estimate.gradient_bytes),
        ("optimizer", estimate.optimizer_bytes),
    ):
        assert value == pytest.approx(real[kind], rel=TOLERANCE), (kind, value, real[kind])
    assert estimate.total_bytes == pytest.approx(sum(real.values()), rel=TOLERANCE)


def test_bf16_halves_weights_and_gradients_but_not_the_float32_master_and_state():
    full = estimate_memory(build, "deepspeed_stage_2", devices=2)
    half = estimate_memory(build, "deepspeed_stage_2", devices=2, precision="bf16-mixed")
    assert half.parameter_bytes * 2 == full.parameter_bytes
    assert half.gradient_bytes * 2 == full.gradient_bytes
    assert half.optimizer_bytes == full.optimizer_bytes


def test_partitioning_grows_with_the_stage():
    stages = [estimate_memory(build, f"deepspeed_stage_{stage}", devices=4) for stage in STAGES]
    assert stages[0].total_bytes > stages[2].total_bytes
    assert stages[2].parameter_bytes < stages[0].parameter_bytes
