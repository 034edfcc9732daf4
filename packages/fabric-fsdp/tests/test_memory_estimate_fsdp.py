"""estimate_memory for FSDP2 and ModelParallelStrategy agrees with the local shard bytes (2 processes, gloo)."""

from __future__ import annotations

import json

import pytest
from conftest import SCRIPTS
from fsdp_common import run_script
from memory_estimate import MLP, build, parallelize

from fabric_core.cli import main as fabric_cli
from fabric_core.utilities.memory import estimate_memory

TOLERANCE = 0.05
CASES = {
    "fsdp": (build, "fsdp", {}),
    "fsdp_bf16_mixed": (build, "fsdp", {"precision": "bf16-mixed"}),
    "model_parallel": (MLP, "model_parallel", {"parallelize_fn": parallelize}),
    "model_parallel_default": (build, "model_parallel", {}),
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    out = tmp_path_factory.mktemp("memory")
    run_script(str(SCRIPTS / "memory_estimate.py"), str(out))
    return {case: json.loads((out / f"{case}.json").read_text()) for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_the_estimate_is_within_5_percent_of_the_local_shards(measured, case):
    factory, strategy, kwargs = CASES[case]
    estimate = estimate_memory(factory, strategy, devices=2, optimizer="adam", **kwargs)
    real = measured[case]
    for kind, value in (
        ("parameters", estimate.parameter_bytes),
        ("gradients", estimate.gradient_bytes),
        ("optimizer", estimate.optimizer_bytes),
    ):
        assert value == pytest.approx(real[kind], rel=TOLERANCE), (kind, value, real[kind])


def test_hybrid_sharding_shards_within_a_group_and_no_shard_replicates():
    full = estimate_memory(build, "fsdp", devices=2, sharding_strategy="NO_SHARD")
    hybrid = estimate_memory(build, "fsdp", devices=4, sharding_strategy="HYBRID_SHARD", device_mesh=(2, 2))
    sharded = estimate_memory(build, "fsdp", devices=2)
    assert hybrid.parameter_bytes == sharded.parameter_bytes
    assert full.parameter_bytes == sum(p.numel() * 4 for p in build().parameters())
    assert any("replicated" in note for note in hybrid.notes)


def test_bf16_mixed_keeps_float32_shards_and_bf16_true_halves_them():
    mixed = estimate_memory(build, "fsdp", devices=2, precision="bf16-mixed")
    true = estimate_memory(build, "fsdp", devices=2, precision="bf16-true")
    assert mixed.parameter_bytes == 2 * true.parameter_bytes


def test_the_cli_takes_a_parallelize_fn_from_a_script(capsys: pytest.CaptureFixture[str]):
    script = SCRIPTS / "tp_train.py"
    argv = ["estimate", "--model", f"{script}:make", "--strategy", "model_parallel", "--devices", "4"]
    argv += ["--data-parallel-size", "2", "--parallelize-fn", f"{script}:parallelize", "--json"]

    assert fabric_cli(argv) == 0

    printed = json.loads(capsys.readouterr().out)
    expected = estimate_memory(
        MLP, "model_parallel", devices=4, data_parallel_size=2, parallelize_fn=parallelize
    )
    assert printed["total_bytes"] == expected.total_bytes
    assert any("data_parallel=2 x tensor_parallel=2" in note for note in printed["notes"])


def test_a_parallelize_fn_over_a_real_model_is_refused():
    with pytest.raises(ValueError, match="shards it in place"):
        estimate_memory(MLP(), "model_parallel", devices=2, parallelize_fn=parallelize)
