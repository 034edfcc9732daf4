"""RandomState in checkpoints: every rank's generators saved, each rank's own restored, at any world size."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fabric_core import Fabric
from fabric_core.io.dcp import save_sharded
from fabric_core.io.optimizer_state import module_in_state
from fabric_core.strategies import ParallelStrategy
from fabric_core.utilities import rank_zero
from fabric_core.utilities.rng import RandomState

try:
    import numpy
except ImportError:  # the state of NumPy's generator is saved only where NumPy is there
    numpy = None  # type: ignore[assignment]


class ForkedProcesses(ParallelStrategy):
    """Core's process-group plumbing as it is, in forked processes (no plugin needed, no interpreter start)."""

    def __init__(self) -> None:
        super().__init__(start_method="fork")


def seed(value: int) -> None:
    torch.manual_seed(value)
    random.seed(value + 1)
    if numpy is not None:
        numpy.random.seed(value + 2)


def draws() -> list[float]:
    """A few numbers from every generator RandomState saves; the Gaussians leave cached values behind."""
    values = [*torch.rand(3).tolist(), random.random(), random.gauss(0.0, 1.0)]
    if numpy is not None:
        values += [*numpy.random.rand(2).tolist(), float(numpy.random.standard_normal())]
    return values


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def test_a_resumed_run_draws_the_same_numbers_as_the_uninterrupted_one(
    fabric: Fabric, tmp_path: Path
) -> None:
    seed(7)
    draws()  # caches a Gaussian in random and NumPy: part of the state
    state = {"rng": RandomState(fabric), "step": 3}
    fabric.save(tmp_path / "checkpoint.pt", state)
    expected = draws()
    draws()

    fabric.load(tmp_path / "checkpoint.pt", state)

    assert draws() == expected
    assert state["step"] == 3


def test_the_saved_state_loads_with_weights_only(fabric: Fabric, tmp_path: Path) -> None:
    fabric.save(tmp_path / "checkpoint.pt", {"rng": RandomState(fabric)})

    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["rng"]

    assert saved["format"] == "fabric.RandomState" and saved["world_size"] == 1
    assert set(saved["ranks"][0]) == {"torch", "python"} | ({"numpy"} if numpy is not None else set())
    fabric.load(tmp_path / "checkpoint.pt", {"rng": RandomState(fabric)}, weights_only=True)


def test_a_value_that_is_not_a_random_state_gets_one_clear_error(fabric: Fabric, tmp_path: Path) -> None:
    rng = RandomState(fabric)
    with pytest.raises(TypeError, match=r"got int \(5\), but takes the dict that RandomState.state_dict\(\)"):
        rng.load_state_dict(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got a dict with the keys 'count', not the dict that RandomState"):
        rng.load_state_dict({"count": 1})
    fabric.save(tmp_path / "checkpoint.pt", {"rng": rng, "step": 3})
    with pytest.raises(TypeError, match=re.escape("RandomState.load_state_dict() got int (3)")):
        fabric.load(tmp_path / "checkpoint.pt", {"rng": 0, "step": rng})  # names swapped
    with pytest.raises(
        TypeError, match=re.escape("RandomState(fabric) takes the Fabric of the run, got int")
    ):
        RandomState(5)  # type: ignore[arg-type]


def test_a_damaged_state_changes_no_generator(fabric: Fabric) -> None:
    rng = RandomState(fabric)
    damaged = rng.state_dict()
    damaged["ranks"][0]["python"]["state"] = torch.zeros(3, dtype=torch.int64)
    seed(3)
    expected = draws()
    seed(3)

    with pytest.raises(ValueError, match="the entry of rank 0 holds a damaged generator state"):
        rng.load_state_dict(damaged)

    assert draws() == expected
    assert repr(rng).startswith("RandomState(world_size=1, generators=[torch, python")


def two_ranks(fabric: Fabric, directory: str) -> dict[str, Any]:
    """Round trips at 2 ranks (a file, a DCP directory), then the parent's 1-rank checkpoint loaded at 2."""
    root = Path(directory)
    seed(100 + 10 * fabric.global_rank)
    rng = RandomState(fabric)
    fabric.save(root / "two.pt", {"rng": rng})
    expected = draws()
    draws()
    fabric.load(root / "two.pt", {"rng": rng})
    again = draws()

    save_sharded(fabric.strategy, root / "two.dcp", {"rng": rng}, None, module_in_state)
    expected_dcp = draws()
    fabric.load(root / "two.dcp", {"rng": rng})
    again_dcp = draws()

    torch_state, python_state = torch.get_rng_state(), random.getstate()
    numpy_state = numpy.random.get_state() if numpy is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.load(root / "one.pt", {"rng": rng})
        fabric.load(root / "one.pt", {"rng": rng})
    loaded = draws()
    torch.set_rng_state(torch_state)
    random.setstate(python_state)
    if numpy is not None and numpy_state is not None:
        numpy.random.set_state(numpy_state)
    unchanged = draws()

    values = torch.tensor([expected, again, expected_dcp, again_dcp, loaded, unchanged], dtype=torch.float64)
    return {"values": fabric.all_gather(values).tolist(), "warnings": [str(w.message) for w in caught]}


def test_two_ranks_save_their_own_streams_and_restore_them_at_any_world_size(
    fabric: Fabric, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(1)
    fabric.save(tmp_path / "one.pt", {"rng": RandomState(fabric)})
    from_one = draws()

    result = Fabric(accelerator="cpu", devices=2, strategy=ForkedProcesses()).launch(two_ranks, str(tmp_path))
    assert result is not None

    (expected, again, expected_dcp, again_dcp, loaded, unchanged) = zip(*result["values"])
    assert expected[0] != expected[1], "each rank has its own streams"
    assert again == expected and again_dcp == expected_dcp, "each rank restores its own, from a file and DCP"
    assert loaded[0] == from_one, "rank 0 restores the one saved rank"
    assert loaded[1] == unchanged[1] != from_one, "rank 1 keeps its generators rather than copy rank 0's"
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "world size 1, but this run has world size 2" in result["warnings"][0]
    assert "rank 1 keeps its current ones" in result["warnings"][0]

    monkeypatch.setattr(rank_zero, "_said", set())
    with pytest.warns(UserWarning, match="world size 2, but this run has world size 1") as caught:
        fabric.load(tmp_path / "two.pt", {"rng": RandomState(fabric)})
        fabric.load(tmp_path / "two.pt", {"rng": RandomState(fabric)})
    assert len(caught) == 1
    assert draws() == expected[0], "rank 0 of two restores at one process"
