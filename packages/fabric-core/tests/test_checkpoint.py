"""Saving and loading: round trips, strictness, raw state dicts, atomic writes and safe loading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from core_helpers import TinyModel, regression_data
from torch import nn

from fabric_core import Fabric
from fabric_core.io import TorchCheckpointIO
from fabric_core.strategies.strategy import Strategy
from fabric_core.utilities.checkpoint import apply_checkpoint, check_entries, collect_state


class Box:
    """A custom class: safe (weights_only) loading refuses to unpickle it."""

    def __init__(self, value: int) -> None:
        self.value = value


class Counter:
    """Any object with ``state_dict`` / ``load_state_dict`` is saved through them."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = state["count"]


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def set_up_training(fabric: Fabric, seed: int) -> tuple[Any, Any, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = TinyModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train_steps(fabric: Fabric, model: Any, optimizer: Any, scheduler: Any, steps: int) -> None:
    x, y = regression_data(n=8)
    for _ in range(steps):
        fabric.backward(nn.functional.mse_loss(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()


def assert_same_state(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b


def test_save_and_load_restore_model_optimizer_scheduler_and_plain_values(
    fabric: Fabric, tmp_path: Path
) -> None:
    model, optimizer, scheduler = set_up_training(fabric, seed=0)
    train_steps(fabric, model, optimizer, scheduler, steps=3)
    counter = Counter(5)
    path = tmp_path / "checkpoint.pt"
    fabric.save(
        path,
        {
            "model": model,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "counter": counter,
            "step": 3,
            "config": {"name": "run", "sizes": [1, 2]},
        },
    )

    restored_model, restored_optimizer, restored_scheduler = set_up_training(fabric, seed=1)
    restored_counter = Counter()
    state = {
        "model": restored_model,
        "optimizer": restored_optimizer,
        "scheduler": restored_scheduler,
        "counter": restored_counter,
        "step": 0,
    }
    remainder = fabric.load(path, state)

    assert remainder == {"config": {"name": "run", "sizes": [1, 2]}}
    assert state["step"] == 3
    assert restored_counter.count == 5
    assert_same_state(restored_model.state_dict(), model.state_dict())
    adam_state = restored_optimizer.state_dict()["state"]
    assert set(adam_state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert_same_state(restored_optimizer.state_dict(), optimizer.state_dict())
    assert restored_scheduler.state_dict() == scheduler.state_dict()
    assert restored_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.01 * 0.5**3

    train_steps(fabric, model, optimizer, scheduler, steps=2)
    train_steps(fabric, restored_model, restored_optimizer, restored_scheduler, steps=2)
    for original, resumed in zip(model.parameters(), restored_model.parameters(), strict=True):
        assert torch.equal(original, resumed), (
            "training resumed from the checkpoint must continue identically"
        )


def test_checkpoint_file_is_a_plain_dict_of_state_dicts_without_wrapper_prefixes(
    fabric: Fabric, tmp_path: Path
) -> None:
    model, optimizer, _ = set_up_training(fabric, seed=0)
    fabric.save(tmp_path / "c.pt", {"model": model, "optimizer": optimizer})

    raw = torch.load(tmp_path / "c.pt", weights_only=True)

    assert set(raw["model"]) == {"layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}
    assert set(raw["optimizer"]) == {"state", "param_groups"}


def test_load_without_state_returns_the_whole_checkpoint(fabric: Fabric, tmp_path: Path) -> None:
    fabric.save(tmp_path / "c.pt", {"step": 7, "values": torch.arange(3)})

    checkpoint = fabric.load(tmp_path / "c.pt")

    assert checkpoint["step"] == 7
    assert torch.equal(checkpoint["values"], torch.arange(3))


def test_strict_load_names_the_missing_entry(fabric: Fabric, tmp_path: Path) -> None:
    model = fabric.setup(TinyModel())
    fabric.save(tmp_path / "c.pt", {"model": model})

    with pytest.raises(KeyError, match=r"no entry 'epoch' \(it holds: 'model'\).*strict=False"):
        fabric.load(tmp_path / "c.pt", {"model": model, "epoch": 0})


def test_non_strict_load_restores_what_exists_and_leaves_the_rest(fabric: Fabric, tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = fabric.setup(TinyModel())
    fabric.save(tmp_path / "c.pt", {"model": saved, "step": 4})
    torch.manual_seed(1)
    target = fabric.setup(TinyModel())
    state = {"model": target, "epoch": 9}

    remainder = fabric.load(tmp_path / "c.pt", state, strict=False)

    assert remainder == {"step": 4}
    assert state["epoch"] == 9
    assert_same_state(target.state_dict(), saved.state_dict())


def test_strict_load_refuses_mismatched_model_keys_and_non_strict_tolerates_them(
    fabric: Fabric, tmp_path: Path
) -> None:
    saved = fabric.setup(nn.Linear(2, 2))
    fabric.save(tmp_path / "c.pt", {"model": saved})
    without_bias = fabric.setup(nn.Linear(2, 2, bias=False))

    with pytest.raises(RuntimeError, match=r'Unexpected key.*"bias"'):
        fabric.load(tmp_path / "c.pt", {"model": without_bias})
    fabric.load(tmp_path / "c.pt", {"model": without_bias}, strict=False)

    assert torch.equal(without_bias.weight, saved.weight)


def test_load_raw_reads_a_plain_pytorch_state_dict_file(fabric: Fabric, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TinyModel()
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    source_optimizer = torch.optim.SGD(source.parameters(), lr=0.3, momentum=0.9)
    torch.save(source_optimizer.state_dict(), tmp_path / "optimizer.pt")
    torch.manual_seed(1)
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))

    fabric.load_raw(tmp_path / "weights.pt", model)
    fabric.load_raw(tmp_path / "optimizer.pt", optimizer)

    assert_same_state(model.state_dict(), source.state_dict())
    assert optimizer.param_groups[0]["lr"] == 0.3


def test_a_failed_save_leaves_the_previous_checkpoint_intact_and_no_temporary_file(
    fabric: Fabric, tmp_path: Path
) -> None:
    model = fabric.setup(TinyModel())
    path = tmp_path / "checkpoint.pt"
    fabric.save(path, {"model": model, "step": 1})
    good_bytes = path.read_bytes()

    with pytest.raises(Exception, match=r"lambda|pickle"):
        fabric.save(path, {"model": model, "step": 2, "callback": lambda: None})

    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    assert path.read_bytes() == good_bytes
    reloaded = fabric.load(path)
    assert reloaded["step"] == 1
    assert_same_state(reloaded["model"], model.state_dict())


def test_save_replaces_an_existing_checkpoint_and_creates_parent_directories(
    fabric: Fabric, tmp_path: Path
) -> None:
    path = tmp_path / "runs" / "1" / "last.pt"

    fabric.save(path, {"step": 1})
    fabric.save(path, {"step": 2})

    assert fabric.load(path) == {"step": 2}
    assert os.listdir(path.parent) == ["last.pt"]


def test_safe_loading_refuses_custom_objects_unless_weights_only_is_false(
    fabric: Fabric, tmp_path: Path
) -> None:
    path = tmp_path / "custom.pt"
    fabric.save(path, {"box": Box(3), "step": 1})

    with pytest.raises(ValueError, match=r"safe loading \(weights_only=True\) refuses.*weights_only=False"):
        fabric.load(path)
    with pytest.raises(ValueError, match=r"weights_only=False"):
        fabric.load(path, {"box": None}, weights_only=True)

    checkpoint = fabric.load(path, weights_only=False)
    assert isinstance(checkpoint["box"], Box) and checkpoint["box"].value == 3


def test_save_filter_keeps_only_the_selected_entries(fabric: Fabric, tmp_path: Path) -> None:
    model = fabric.setup(TinyModel())

    fabric.save(
        tmp_path / "c.pt", {"model": model}, filter={"model": lambda key, value: key.startswith("layer2")}
    )

    assert set(fabric.load(tmp_path / "c.pt")["model"]) == {"layer2.weight", "layer2.bias"}


def test_save_filter_on_a_plain_value_is_refused(fabric: Fabric, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"filter\['step'\] was given, but state\['step'\] is not a dict"):
        fabric.save(tmp_path / "c.pt", {"step": 1}, filter={"step": lambda key, value: True})


def test_state_must_be_a_dict(fabric: Fabric, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"must be a dict of names to objects"):
        fabric.save(tmp_path / "c.pt", [1, 2])


def test_loading_a_missing_file_or_a_directory_says_what_is_wrong(fabric: Fabric, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at"):
        fabric.load(tmp_path / "absent.pt")
    with pytest.raises(IsADirectoryError, match=r"sharded"):
        fabric.load(tmp_path)


class RecordingCheckpointIO(TorchCheckpointIO):
    def __init__(self) -> None:
        self.saved: list[Path] = []

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        self.saved.append(Path(path))
        super().save_checkpoint(checkpoint, path, storage_options)


def test_a_checkpoint_io_passed_as_plugin_writes_the_checkpoints(tmp_path: Path) -> None:
    io = RecordingCheckpointIO()
    fabric = Fabric(accelerator="cpu", plugins=[io])

    fabric.save(tmp_path / "c.pt", {"step": 1})

    assert io.saved == [tmp_path / "c.pt"]
    assert fabric.load(tmp_path / "c.pt") == {"step": 1}


def test_torch_checkpoint_io_refuses_storage_options_and_removes_files(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    path = tmp_path / "c.pt"

    with pytest.raises(TypeError, match=r"takes no storage_options"):
        io.save_checkpoint({"a": 1}, path, storage_options={"bucket": "x"})
    io.save_checkpoint({"a": 1}, path)
    assert io.load_checkpoint(path) == {"a": 1}
    io.remove_checkpoint(path)
    assert not path.exists()
    io.remove_checkpoint(path)


class WrappedOptimizerStateStrategy(Strategy):
    """Saves each optimizer's state dict inside a wrapper: loading must take it out again."""

    def get_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {"wrapped": optimizer.state_dict()}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        optimizer.load_state_dict(state_dict["wrapped"])


def test_a_strategy_loads_optimizer_state_through_the_hook_symmetric_to_its_getter(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, strategy=WrappedOptimizerStateStrategy())
    model, optimizer, scheduler = set_up_training(fabric, seed=0)
    train_steps(fabric, model, optimizer, scheduler, steps=2)
    fabric.save(tmp_path / "c.pt", {"model": model, "optimizer": optimizer})
    _, restored, _ = set_up_training(fabric, seed=1)

    fabric.load(tmp_path / "c.pt", {"optimizer": restored}, strict=False)

    assert "wrapped" in torch.load(tmp_path / "c.pt")["optimizer"]
    assert_same_state(restored.state_dict(), optimizer.state_dict())


def test_apply_checkpoint_takes_setter_hooks_as_collect_state_takes_getters() -> None:
    model, counter = nn.Linear(2, 2), Counter(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"model": model, "optimizer": optimizer, "counter": counter, "step": 5}
    # getters and setters that are each other's inverse: a checkpoint that scales the weights by 2
    checkpoint = collect_state(
        state,
        module_state=lambda m: {k: 2 * v for k, v in m.state_dict().items()},
        optimizer_state=lambda o: {"lr": o.param_groups[0]["lr"]},
    )
    calls: list[tuple[str, bool]] = []

    def load_module(module: nn.Module, value: Any, strict: bool) -> None:
        calls.append(("module", strict))
        module.load_state_dict({k: v / 2 for k, v in value.items()}, strict=strict)

    def load_optimizer(opt: torch.optim.Optimizer, value: Any) -> None:
        calls.append(("optimizer", True))
        opt.param_groups[0]["lr"] = value["lr"] * 10

    target_model, target_counter = nn.Linear(2, 2), Counter()
    target_optimizer = torch.optim.SGD(target_model.parameters(), lr=0.5)
    target = {"model": target_model, "optimizer": target_optimizer, "counter": target_counter, "step": 0}

    remainder = apply_checkpoint(
        target, {**checkpoint, "extra": 1}, load_module=load_module, load_optimizer=load_optimizer
    )

    assert remainder == {"extra": 1}
    assert calls == [("module", True), ("optimizer", True)]
    assert_same_state(target_model.state_dict(), model.state_dict())
    assert target_optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    assert target_counter.count == 3 and target["step"] == 5
    # one module: the whole checkpoint is its state dict; None: nothing is restored
    assert (
        apply_checkpoint(
            target_model, checkpoint["model"], load_module=load_module, load_optimizer=load_optimizer
        )
        == {}
    )
    assert apply_checkpoint(None, checkpoint) is checkpoint


def test_check_entries_names_the_path_the_missing_and_the_saved_entries(tmp_path: Path) -> None:
    check_entries(["model", "epoch"], ["model"], strict=False)
    check_entries(["model"], ["model", "step"], strict=True)
    with pytest.raises(KeyError, match=r"checkpoint '.*c\.pt' has no entry 'epoch' \(it holds: 'model'\)"):
        check_entries(["model", "epoch"], ["model"], strict=True, path=tmp_path / "c.pt")
    with pytest.raises(KeyError, match=r"The checkpoint has no entry 'a', 'b' \(it holds: nothing\)"):
        check_entries(["a", "b"], [], strict=True)
