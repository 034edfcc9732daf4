"""DeepSpeed on 2 CPU processes (gloo): ZeRO stages, offload and bf16 against a single-process run."""

from __future__ import annotations

import pytest
import torch
from common import model, reference_parameters
from conftest import launch


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return reference_parameters()


def assert_matches(trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], atol: float) -> None:
    assert trained.keys() == reference.keys()
    for name, expected in reference.items():
        torch.testing.assert_close(trained[name], expected, rtol=0, atol=atol, msg=name)
    assert not torch.equal(trained["0.weight"], model().state_dict()["0.weight"]), "nothing was trained"


def test_zero_stages_1_2_3_reach_the_parameters_of_one_process(tmp_path, reference):
    launch("train.py", str(tmp_path), "stage1", "stage2", "stage3")
    for case in ("stage1", "stage2", "stage3"):
        result = torch.load(tmp_path / f"{case}.pt")
        assert result["precision"] == "32-true" and result["dtype"] == torch.float32
        assert_matches(result["params"], reference, atol=1e-5)


def test_offload_zero_init_and_bf16_train(tmp_path, reference):
    launch("train.py", str(tmp_path), "offload2", "offload3", "init3", "bf16")
    for case in ("offload2", "offload3", "init3"):
        assert_matches(torch.load(tmp_path / f"{case}.pt")["params"], reference, atol=1e-5)
    bf16 = torch.load(tmp_path / "bf16.pt")
    assert bf16["precision"] == "bf16-mixed" and bf16["dtype"] == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(bf16["losses"])))
    assert_matches(bf16["params"], reference, atol=5e-2)
