"""``seed_everything``: repeatable random numbers, exported for child processes."""

from __future__ import annotations

import os
import random

import numpy
import pytest
import torch

from fabric_core import seed_everything


def draw() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(numpy.random.rand()), torch.rand(3)


def test_seed_everything_makes_python_numpy_and_torch_repeatable() -> None:
    assert seed_everything(42) == 42
    first = draw()
    seed_everything(42)
    second = draw()
    seed_everything(43)
    third = draw()

    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    assert first[0] != third[0] and not torch.equal(first[2], third[2])


def test_seed_everything_exports_the_seed_for_child_processes() -> None:
    seed_everything(7, workers=True)

    assert os.environ["FABRIC_GLOBAL_SEED"] == "7"
    assert os.environ["FABRIC_SEED_WORKERS"] == "1"
    seed_everything(7)
    assert os.environ["FABRIC_SEED_WORKERS"] == "0"


def test_seed_everything_without_a_seed_uses_the_exported_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_GLOBAL_SEED", "1234")

    assert seed_everything() == 1234
    value = torch.rand(1)
    torch.manual_seed(1234)
    assert torch.equal(torch.rand(1), value)


def test_seed_everything_without_any_seed_uses_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FABRIC_GLOBAL_SEED", raising=False)

    assert seed_everything() == 0


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_refuses_seeds_outside_the_valid_range(seed: object) -> None:
    with pytest.raises(ValueError, match=r"the seed must be an integer in \[0, 4294967295\]"):
        seed_everything(seed)


def test_seed_everything_accepts_the_range_bounds() -> None:
    assert seed_everything(0) == 0
    assert seed_everything(2**32 - 1) == 2**32 - 1
