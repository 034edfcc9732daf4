"""Behaviour a user switching from Lightning Fabric relies on, in one process."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from core_helpers import TinyModel
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

from fabric_core import Fabric, is_wrapped, seed_everything
from fabric_core.registry import DuplicateNameError
from fabric_core.strategies import STRATEGY_REGISTRY, SingleDeviceStrategy, Strategy
from fabric_core.utilities import move_data_to_device, rank_zero_only
from fabric_core.utilities.data import DistributedSamplerWrapper
from fabric_core.utilities.seed import reset_seed, worker_init_function


class Generator(nn.Module):
    """A model with a method other than forward that runs its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.layer(x) * scale


class CountingWrapper(nn.Module):
    """Stands in for DDP: forward goes through it, and it counts the calls."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module(*args, **kwargs)


class WrappingStrategy(SingleDeviceStrategy):
    def setup_module(self, module: nn.Module) -> nn.Module:
        return CountingWrapper(module)

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        return module.module.state_dict()


def test_the_wrapped_model_has_a_device() -> None:
    fabric = Fabric(accelerator="cpu")
    model = fabric.setup(TinyModel())

    assert model.device == torch.device("cpu")


def test_a_marked_method_runs_through_the_strategys_wrapper() -> None:
    fabric = Fabric(accelerator="cpu", strategy=WrappingStrategy())
    model = fabric.setup(Generator())
    wrapper = model._forward_module
    x = torch.ones(1, 2)

    model.mark_forward_method("generate")
    output = model.generate(x, scale=2.0)

    assert wrapper.calls == 1, "generate went through the wrapper"
    assert torch.allclose(output, model.module.layer(x) * 2.0)
    model(x)
    assert wrapper.calls == 2, "forward is forward again afterwards"
    with pytest.raises(ValueError, match=r"has no method 'sample'"):
        model.mark_forward_method("sample")
    with pytest.raises(ValueError, match=r"forward already runs through the strategy"):
        model.mark_forward_method("forward")


def test_an_unmarked_method_that_runs_layers_on_a_wrapped_model_warns_once() -> None:
    fabric = Fabric(accelerator="cpu", strategy=WrappingStrategy())
    model = fabric.setup(Generator())

    with pytest.warns(UserWarning, match=r"mark_forward_method\('generate'\)"):
        model.generate(torch.ones(1, 2))
    assert model._forward_module.calls == 0


def test_call_passes_each_callback_only_the_keyword_arguments_it_takes() -> None:
    seen: dict[str, Any] = {}

    class Narrow:
        def on_step(self, loss: float) -> None:
            seen["narrow"] = loss

    class Wide:
        def on_step(self, **kwargs: Any) -> None:
            seen["wide"] = kwargs

    fabric = Fabric(accelerator="cpu", callbacks=[Narrow(), Wide()])
    fabric.call("on_step", loss=1.5, step=3)

    assert seen == {"narrow": 1.5, "wide": {"loss": 1.5, "step": 3}}


def test_seed_everything_verbose_and_reset_seed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        seed_everything(7, verbose=False)
    assert "Seed set" not in caplog.text
    with caplog.at_level(logging.INFO, logger="fabric_core"):
        seed_everything(7)
    assert "Seed set to 7" in caplog.text

    first = torch.rand(3)
    reset_seed()
    assert torch.equal(torch.rand(3), first)


class RandomDataset(Dataset):  # type: ignore[type-arg]
    """Each item is a draw from torch's generator in the process that loads it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(1)


def _draws(fabric: Fabric) -> list[float]:
    loader = fabric.setup_dataloaders(DataLoader(RandomDataset(), batch_size=1, num_workers=2))
    return [float(batch) for batch in loader]


def test_seed_everything_with_workers_seeds_each_worker_reproducibly() -> None:
    fabric = Fabric(accelerator="cpu")
    seed_everything(3, workers=True, verbose=False)
    first = _draws(fabric)
    seed_everything(3, workers=True, verbose=False)
    second = _draws(fabric)

    assert first == second, "the same seed gives the same worker draws"
    assert first[0] != first[1], "workers 0 and 1 draw differently"
    seed_everything(3, workers=False, verbose=False)


def test_the_worker_seed_differs_per_rank() -> None:
    def draw(rank: int) -> float:
        torch.manual_seed(100)  # what the DataLoader gives worker 0
        worker_init_function(0, rank=rank)
        return float(torch.rand(1))

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_a_custom_sampler_is_sharded_with_one_order_on_every_rank() -> None:
    sampler = SubsetRandomSampler(list(range(7)))
    shards = []
    for rank in (0, 1):
        torch.manual_seed(rank)  # the ranks' generators differ: the wrapper must not depend on them
        shards.append(list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank)))

    assert len(shards[0]) == len(shards[1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(range(7))
    assert len(set(shards[0]) & set(shards[1])) <= 1, "only the padding index repeats"


def test_is_wrapped_move_data_to_device_and_rank_zero_only() -> None:
    fabric = Fabric(accelerator="cpu")
    model = TinyModel()
    wrapped = fabric.setup(model)

    assert is_wrapped(wrapped) and not is_wrapped(model)
    moved = move_data_to_device({"x": [torch.ones(1)]}, torch.device("cpu"))
    assert moved["x"][0].device.type == "cpu"
    assert rank_zero_only(lambda: "ran")() == "ran"


def test_zero_grad_passes_the_users_arguments_through() -> None:
    fabric = Fabric(accelerator="cpu")
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(model(torch.ones(2, 4)).sum())

    optimizer.zero_grad(set_to_none=False)

    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_setup_returns_the_scheduler_last() -> None:
    fabric = Fabric(accelerator="cpu")
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)

    model, optimizer, returned = fabric.setup(model, optimizer, scheduler=scheduler)
    fabric.backward(model(torch.ones(2, 4)).sum())
    optimizer.step()
    returned.step()

    assert returned is scheduler
    assert optimizer.param_groups[0]["lr"] == 0.5
    fresh = TinyModel()
    with pytest.raises(TypeError, match=r"scheduler of another optimizer"):
        fabric.setup(fresh, torch.optim.SGD(fresh.parameters(), lr=1.0), scheduler=scheduler)


def test_a_scheduler_built_on_the_returned_optimizer_drives_its_learning_rate() -> None:
    fabric = Fabric(accelerator="cpu")
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1**step)

    fabric.backward(model(torch.ones(2, 4)).sum())
    optimizer.step()
    scheduler.step()

    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_a_compiled_model_is_set_up_and_saved_with_its_own_keys(tmp_path: Any) -> None:
    fabric = Fabric(accelerator="cpu", strategy=WrappingStrategy())
    torch.manual_seed(0)
    model = TinyModel()
    reference = {key: value.clone() for key, value in model.state_dict().items()}
    compiled = torch.compile(model, backend="eager")

    wrapped = fabric.setup(compiled)
    output = wrapped(torch.ones(2, 4))

    assert wrapped._forward_module.calls == 1, "compile is applied on top of the strategy's wrapper"
    assert torch.allclose(output, model(torch.ones(2, 4)))
    assert set(wrapped.state_dict()) == set(reference), "no _orig_mod. prefix"
    fabric.save(tmp_path / "ckpt.pt", {"model": wrapped})
    assert set(torch.load(tmp_path / "ckpt.pt")["model"]) == set(reference)


def test_the_seeds_custom_strategy_trains() -> None:
    class CustomStrategy(Strategy):
        def setup_module(self, module: nn.Module) -> nn.Module:
            return module

        def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor

    STRATEGY_REGISTRY.register("custom_seed_test", CustomStrategy, description="the seed's example")
    try:
        fabric = Fabric(strategy="custom_seed_test")
        model = TinyModel()
        model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        before = [p.detach().clone() for p in model.parameters()]
        fabric.backward(model(torch.ones(2, 4)).pow(2).sum())
        optimizer.step()

        assert isinstance(fabric.strategy, CustomStrategy)
        assert fabric.device == torch.device("cpu")
        assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
        assert STRATEGY_REGISTRY.get("custom_seed_test") is CustomStrategy
        assert fabric.all_reduce(3.0).item() == 3.0
        assert fabric.all_gather(2.0).tolist() == [2.0]
    finally:
        STRATEGY_REGISTRY.remove("custom_seed_test")


def test_register_takes_the_seeds_keywords_and_refuses_what_is_not_a_strategy() -> None:
    class Named(SingleDeviceStrategy):
        pass

    STRATEGY_REGISTRY.register(name="named_seed_test", strategy_class=Named, description="d")
    try:
        assert STRATEGY_REGISTRY.get("named_seed_test") is Named
        assert STRATEGY_REGISTRY.entry("named_seed_test").description == "d"
        with pytest.raises(DuplicateNameError, match=r"already registered"):
            STRATEGY_REGISTRY.register("named_seed_test", Named)
    finally:
        STRATEGY_REGISTRY.remove("named_seed_test")
    with pytest.raises(TypeError, match=r"must be a subclass of Strategy"):
        STRATEGY_REGISTRY.register("not_a_strategy", dict)
    assert "not_a_strategy" not in STRATEGY_REGISTRY


def test_lightning_import_paths_exist() -> None:
    from fabric_core.plugins import CheckpointIO, HalfPrecision, MixedPrecision, Precision  # noqa: F401
    from fabric_core.utilities import rank_zero_info, rank_zero_warn, seed_everything  # noqa: F401
    from fabric_core.utilities.seed import pl_worker_init_function  # noqa: F401

    with pytest.raises(ImportError, match=r"pip install fabric-xla"):
        from fabric_core.strategies import XLAStrategy  # noqa: F401
