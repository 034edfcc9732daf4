"""The wrapped model, optimizer and loader behave like the user's own objects."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from core_helpers import TinyModel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric
from fabric_core.precision import Precision
from fabric_core.strategies import SingleDeviceStrategy
from fabric_core.wrappers import FabricDataLoader, FabricModule, FabricOptimizer, unwrap


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def test_model_attributes_and_custom_methods_reach_the_users_module(fabric: Fabric) -> None:
    original = TinyModel(width=6)
    model = fabric.setup(original)

    assert model.width == 6
    assert model.layer1 is original.layer1
    assert model.predict(torch.ones(3, 4)).shape == (3,)
    assert torch.equal(model(torch.ones(1, 4)), original(torch.ones(1, 4)))
    with pytest.raises(AttributeError):
        _ = model.no_such_attribute


def test_setting_an_attribute_of_the_users_module_through_the_wrapper_changes_the_module(
    fabric: Fabric,
) -> None:
    original = TinyModel(width=6)
    model = fabric.setup(original)

    model.width = 10
    model.new_attribute = "kept on the wrapper"

    assert original.width == 10
    assert model.new_attribute == "kept on the wrapper"


def test_model_state_dict_has_no_wrapper_prefix(fabric: Fabric) -> None:
    original = TinyModel()
    model = fabric.setup(original)

    assert list(model.state_dict()) == list(original.state_dict())
    fresh = TinyModel()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.layer1.weight, original.layer1.weight)


def test_model_load_state_dict_loads_into_the_users_module(fabric: Fabric) -> None:
    original = TinyModel()
    model = fabric.setup(original)
    other = TinyModel()

    model.load_state_dict(other.state_dict())

    assert torch.equal(original.layer2.weight, other.layer2.weight)


def test_model_wrapper_exposes_the_module_and_unwraps(fabric: Fabric) -> None:
    original = TinyModel()
    model = fabric.setup(original)

    assert isinstance(model, nn.Module) and isinstance(model, FabricModule)
    assert model.module is original
    assert unwrap(model) is original
    assert repr(model).startswith("FabricModule(TinyModel(")
    assert {id(p) for p in model.parameters()} == {id(p) for p in original.parameters()}
    model.eval()
    assert not original.training


def test_optimizer_is_an_instance_of_the_original_class_with_live_param_groups(fabric: Fabric) -> None:
    model = TinyModel()
    original = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    _, optimizer = fabric.setup(model, original)

    assert isinstance(optimizer, torch.optim.Adam) and isinstance(optimizer, torch.optim.Optimizer)
    assert isinstance(optimizer, FabricOptimizer)
    assert optimizer.optimizer is original and unwrap(optimizer) is original
    assert optimizer.param_groups is original.param_groups
    assert optimizer.state is original.state
    assert optimizer.defaults["betas"] == (0.8, 0.9)

    optimizer.param_groups[0]["lr"] = 0.5
    assert original.param_groups[0]["lr"] == 0.5
    original.param_groups[0]["lr"] = 0.25
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_setting_an_optimizer_attribute_through_the_wrapper_sets_it_on_the_original(fabric: Fabric) -> None:
    model = TinyModel()
    original = torch.optim.SGD(model.parameters(), lr=0.1)
    _, optimizer = fabric.setup(model, original)

    optimizer.custom_flag = True

    assert vars(original)["custom_flag"] is True


def test_optimizer_add_param_group_through_the_wrapper_reaches_the_original(fabric: Fabric) -> None:
    model = TinyModel()
    original = torch.optim.SGD(model.layer1.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, original)

    optimizer.add_param_group({"params": list(model.layer2.parameters()), "lr": 0.01})

    assert len(original.param_groups) == 2
    assert original.param_groups[1]["lr"] == 0.01


def test_optimizer_step_and_zero_grad_update_the_model(fabric: Fabric) -> None:
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.layer1.weight.detach().clone()

    fabric.backward(model(torch.ones(2, 4)).sum())
    optimizer.step()
    optimizer.zero_grad()

    assert not torch.equal(model.layer1.weight, before)
    assert model.layer1.weight.grad is None


def test_optimizer_step_accepts_a_closure(fabric: Fabric) -> None:
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2))
    calls = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(torch.ones(2, 4)).pow(2).sum()
        fabric.backward(loss)
        calls.append(loss.item())
        return loss

    loss = optimizer.step(closure)

    assert isinstance(optimizer, torch.optim.LBFGS)
    assert calls and loss.item() == calls[0]


def test_lr_scheduler_on_the_wrapped_optimizer_works_without_warnings(fabric: Fabric) -> None:
    model = TinyModel()
    original = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = fabric.setup(model, original)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
        for _ in range(3):
            fabric.backward(model(torch.ones(2, 4)).sum())
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()

    assert scheduler.get_last_lr() == pytest.approx([1e-3])
    assert original.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_optimizer_state_dict_round_trips_through_the_wrapper(fabric: Fabric) -> None:
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=0.01))
    fabric.backward(model(torch.ones(2, 4)).sum())
    optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())

    other_model = TinyModel()
    other_model, other = fabric.setup(other_model, torch.optim.Adam(other_model.parameters(), lr=0.5))
    other.load_state_dict(state)

    assert other.param_groups[0]["lr"] == 0.01
    assert torch.equal(
        other.state[other.param_groups[0]["params"][0]]["exp_avg"], state["state"][0]["exp_avg"]
    )


def test_data_loader_wrapper_iterates_like_the_loader_every_epoch(fabric: Fabric) -> None:
    original = DataLoader(TensorDataset(torch.arange(6.0)), batch_size=4)
    loader = fabric.setup_dataloaders(original)

    first = [batch[0].tolist() for batch in loader]
    second = [batch[0].tolist() for batch in loader]

    assert first == second == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]
    assert len(loader) == 2
    assert loader.dataset is original.dataset
    assert unwrap(loader) is original
    assert isinstance(loader, FabricDataLoader)
    assert "FabricDataLoader" in repr(loader)


def test_unwrap_returns_other_objects_unchanged() -> None:
    tensor = torch.ones(1)

    assert unwrap(tensor) is tensor
    assert unwrap(None) is None


def test_hooks_on_the_wrapper_and_global_hooks_run_on_every_call(fabric: Fabric) -> None:
    model = fabric.setup(TinyModel())
    seen: list[str] = []
    on_wrapper = model.register_forward_hook(lambda module, args, output: seen.append("wrapper"))
    on_everything = nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(type(module).__name__)
    )
    try:
        model(torch.ones(1, 4))
    finally:
        on_everything.remove()
        on_wrapper.remove()
    model(torch.ones(1, 4))

    assert seen.count("wrapper") == 1 and "FabricModule" in seen and "Linear" in seen


def test_a_replaced_forward_is_what_calling_the_wrapper_runs(fabric: Fabric) -> None:
    model = fabric.setup(TinyModel())
    model.forward = lambda x: torch.zeros(2)  # type: ignore[method-assign]

    assert torch.equal(model(torch.ones(1, 4)), torch.zeros(2))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_deep_copy_of_the_wrapped_model_runs_its_own_parameters(precision: str) -> None:
    model = Fabric(accelerator="cpu", devices=1, precision=precision).setup(TinyModel())
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.zero_()

    assert torch.count_nonzero(twin(torch.ones(1, 4))) == 0
    assert torch.count_nonzero(model(torch.ones(1, 4))) > 0


class _CountsCalls:
    """Mixin for a strategy or precision plugin: records the backward and optimizer-step calls it receives."""

    calls: list[str]

    def backward(
        self, tensor: torch.Tensor, module: nn.Module | None, *args: object, **kwargs: object
    ) -> None:
        self.calls.append("backward")
        super().backward(tensor, module, *args, **kwargs)  # type: ignore[misc]

    def optimizer_step(self, optimizer: torch.optim.Optimizer, **kwargs: object) -> object:
        self.calls.append("optimizer_step")
        return super().optimizer_step(optimizer, **kwargs)  # type: ignore[misc]


class _CountingPrecision(_CountsCalls, Precision):
    """The float32 plugin, counting the calls it receives."""

    def __init__(self) -> None:
        self.calls = []


class _CountingStrategy(_CountsCalls, SingleDeviceStrategy):
    """``single_device``, counting the calls it receives."""

    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"))
        self.calls = []


def _one_step(fabric: Fabric) -> None:
    model, optimizer = fabric.setup(*_model_and_optimizer())
    fabric.backward(model(torch.randn(4, 4)).sum())
    optimizer.step()


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_strategy_that_replaces_backward_and_the_step_gets_both_calls() -> None:
    strategy = _CountingStrategy()
    _one_step(Fabric(accelerator="cpu", strategy=strategy))
    assert strategy.calls == ["backward", "optimizer_step"]


def test_a_precision_plugin_that_replaces_backward_and_the_step_gets_both_calls() -> None:
    precision = _CountingPrecision()
    _one_step(Fabric(accelerator="cpu", plugins=[precision]))
    assert precision.calls == ["backward", "optimizer_step"]


def test_a_step_replaced_on_the_strategy_instance_is_called() -> None:
    fabric = Fabric(accelerator="cpu")
    calls: list[str] = []
    strategy = fabric.strategy
    original = strategy.optimizer_step
    strategy.optimizer_step = lambda optimizer, **kwargs: (
        calls.append("step") or original(optimizer, **kwargs)
    )  # type: ignore[method-assign]
    _one_step(fabric)
    assert calls == ["step"]


def test_lr_scheduler_on_the_original_optimizer_works_without_warnings(fabric: Fabric) -> None:
    model = TinyModel()
    original = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(original, step_size=1, gamma=0.1)
    model, optimizer = fabric.setup(model, original)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            fabric.backward(model(torch.ones(2, 4)).sum())
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()

    assert original.param_groups[0]["lr"] == pytest.approx(1e-3)
