"""The ``Fabric`` API on one device: the training loop, set-up, collectives and helpers."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from core_helpers import TinyModel, regression_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric
from fabric_core.accelerators import CPUAccelerator
from fabric_core.precision import MixedPrecision
from fabric_core.strategies import SingleDeviceStrategy
from fabric_core.wrappers import FabricDataLoader, FabricModule, FabricOptimizer

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def make_loader() -> DataLoader:
    x, y = regression_data(n=24)
    return DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)


def train_plain(make_optimizer: OptimizerFactory, epochs: int) -> list[torch.Tensor]:
    torch.manual_seed(123)
    model = TinyModel()
    optimizer = make_optimizer(model.parameters())
    loader = make_loader()
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def train_with_fabric(make_optimizer: OptimizerFactory, epochs: int) -> list[torch.Tensor]:
    torch.manual_seed(123)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    fabric.launch()
    model = TinyModel()
    optimizer = make_optimizer(model.parameters())
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(make_loader())
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_single_device_training_equals_a_plain_pytorch_loop_bit_for_bit(optimizer_name: str) -> None:
    make_optimizer = OPTIMIZERS[optimizer_name]

    with_fabric = train_with_fabric(make_optimizer, epochs=2)
    plain = train_plain(make_optimizer, epochs=2)

    initial = train_plain(make_optimizer, epochs=0)
    assert not all(torch.equal(a, b) for a, b in zip(initial, plain, strict=True)), (
        "the loop must change weights"
    )
    for fabric_param, plain_param in zip(with_fabric, plain, strict=True):
        assert torch.equal(fabric_param, plain_param)


def test_properties_describe_one_process_on_the_cpu(fabric: Fabric) -> None:
    assert fabric.device == torch.device("cpu")
    assert (fabric.global_rank, fabric.local_rank, fabric.node_rank, fabric.world_size) == (0, 0, 0, 1)
    assert fabric.is_global_zero is True
    assert isinstance(fabric.strategy, SingleDeviceStrategy)
    assert isinstance(fabric.accelerator, CPUAccelerator)
    assert fabric.strategy.launcher is None
    assert "SingleDeviceStrategy" in repr(fabric)


def test_setup_returns_wrapped_model_and_optimizers_on_the_device(fabric: Fabric) -> None:
    model = TinyModel()
    first = torch.optim.SGD(model.layer1.parameters(), lr=0.1)
    second = torch.optim.Adam(model.layer2.parameters(), lr=0.1)

    wrapped, wrapped_first, wrapped_second = fabric.setup(model, first, second)

    assert isinstance(wrapped, FabricModule) and wrapped.module is model
    assert isinstance(wrapped_first, FabricOptimizer) and wrapped_first.optimizer is first
    assert isinstance(wrapped_second, torch.optim.Adam)
    assert all(p.device == fabric.device for p in wrapped.parameters())


def test_setup_with_a_model_alone_returns_only_the_model(fabric: Fabric) -> None:
    wrapped = fabric.setup(TinyModel())

    assert isinstance(wrapped, FabricModule)


def test_setup_module_then_setup_optimizers(fabric: Fabric) -> None:
    model = fabric.setup_module(TinyModel())
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    first, second = fabric.setup_optimizers(
        torch.optim.SGD(model.layer1.parameters(), lr=0.1), torch.optim.SGD(model.layer2.parameters(), lr=0.1)
    )

    assert isinstance(model, FabricModule)
    assert isinstance(optimizer, FabricOptimizer)
    assert isinstance(first, FabricOptimizer) and isinstance(second, FabricOptimizer)
    with pytest.raises(TypeError, match=r"needs at least one optimizer"):
        fabric.setup_optimizers()


def test_setup_twice_with_the_returned_model_is_refused(fabric: Fabric) -> None:
    wrapped = fabric.setup(TinyModel())

    with pytest.raises(ValueError, match=r"already set up with fabric.setup"):
        fabric.setup(wrapped)
    with pytest.raises(ValueError, match=r"already set up with fabric.setup"):
        fabric.setup_module(wrapped)


def test_setup_twice_with_the_original_model_works_as_in_lightning(fabric: Fabric) -> None:
    model = TinyModel()
    first = fabric.setup(model)
    second = fabric.setup(model)

    assert first is not second and first.module is second.module is model


def test_setup_twice_is_refused_where_the_strategy_changes_the_model_in_place() -> None:
    class InPlaceStrategy(SingleDeviceStrategy):
        allows_repeated_setup = False

    fabric = Fabric(accelerator="cpu", strategy=InPlaceStrategy())
    model = TinyModel()
    fabric.setup(model)

    with pytest.raises(ValueError, match=r"TinyModel was already set up .* cannot do it twice"):
        fabric.setup(model)


def test_setup_refuses_wrong_types_and_wrapped_optimizers(fabric: Fabric) -> None:
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _, wrapped_optimizer = fabric.setup(model, optimizer)

    with pytest.raises(TypeError, match=r"expects a torch.nn.Module first, got dict"):
        fabric.setup({"not": "a model"})
    with pytest.raises(TypeError, match=r"torch.optim.Optimizer objects after the model, got str"):
        fabric.setup(TinyModel(), "adam")
    with pytest.raises(ValueError, match=r"optimizer was already set up"):
        fabric.setup(TinyModel(), wrapped_optimizer)


def test_setup_dataloaders_moves_batches_and_keeps_the_loader_for_one_process(fabric: Fabric) -> None:
    x, y = regression_data(n=8)
    original = DataLoader(TensorDataset(x, y), batch_size=4)

    loader = fabric.setup_dataloaders(original)
    batches = list(loader)

    assert isinstance(loader, FabricDataLoader)
    assert loader.dataloader is original, "with one process the loader is not re-created"
    assert loader.device == fabric.device
    assert len(loader) == 2
    assert loader.batch_size == 4
    assert all(t.device == fabric.device for batch in batches for t in batch)
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


def test_setup_dataloaders_with_several_loaders_returns_a_tuple_and_refuses_set_up_ones(
    fabric: Fabric,
) -> None:
    dataset = TensorDataset(torch.arange(6.0))
    train, val = fabric.setup_dataloaders(DataLoader(dataset), DataLoader(dataset, batch_size=3))

    assert isinstance(train, FabricDataLoader) and isinstance(val, FabricDataLoader)
    with pytest.raises(ValueError, match=r"already set up"):
        fabric.setup_dataloaders(train)
    with pytest.raises(TypeError, match=r"expects torch.utils.data.DataLoader objects, got list"):
        fabric.setup_dataloaders([1, 2, 3])
    with pytest.raises(TypeError, match=r"needs at least one DataLoader"):
        fabric.setup_dataloaders()


def test_setup_dataloaders_without_moving_leaves_batches_alone(fabric: Fabric) -> None:
    loader = fabric.setup_dataloaders(
        DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2), move_to_device=False
    )

    assert loader.device is None
    assert [batch[0].tolist() for batch in loader] == [[0.0, 1.0], [2.0, 3.0]]


def test_backward_on_a_tensor_without_grad_explains_why(fabric: Fabric) -> None:
    model = fabric.setup(TinyModel())
    with torch.no_grad():
        loss = model(torch.ones(2, 4)).sum()

    with pytest.raises(ValueError, match=r"does not require grad.*torch.no_grad"):
        fabric.backward(loss)


def test_backward_passes_arguments_to_tensor_backward(fabric: Fabric) -> None:
    model = fabric.setup(TinyModel())
    output = model(torch.ones(2, 4))

    fabric.backward(output, torch.ones_like(output), retain_graph=True)
    first = model.layer2.bias.grad.clone()
    fabric.backward(output, torch.ones_like(output), model=model)

    assert torch.equal(model.layer2.bias.grad, 2 * first)


def _model_with_gradients(fabric: Fabric) -> tuple[FabricModule, FabricOptimizer]:
    torch.manual_seed(0)
    model = TinyModel()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(model(torch.randn(8, 4)).pow(2).sum() * 10)
    return model, optimizer


def test_clip_gradients_by_norm_returns_the_norm_before_clipping(fabric: Fabric) -> None:
    model, optimizer = _model_with_gradients(fabric)
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))

    norm = fabric.clip_gradients(model, optimizer, max_norm=0.5)

    assert torch.allclose(norm, expected)
    assert norm > 0.5
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert clipped == pytest.approx(0.5, rel=1e-4)


def test_clip_gradients_by_value_clamps_every_element(fabric: Fabric) -> None:
    model, optimizer = _model_with_gradients(fabric)
    assert max(p.grad.abs().max() for p in model.parameters()) > 0.01

    result = fabric.clip_gradients(model, optimizer, clip_val=0.01)

    assert result is None
    assert max(p.grad.abs().max() for p in model.parameters()) <= 0.01


def test_clip_gradients_needs_exactly_one_of_value_and_norm(fabric: Fabric) -> None:
    model, optimizer = _model_with_gradients(fabric)

    with pytest.raises(ValueError, match=r"exactly one of clip_val= .* or max_norm= .*, got neither"):
        fabric.clip_gradients(model, optimizer)
    with pytest.raises(ValueError, match=r"exactly one of clip_val= .* or max_norm= .*, got both"):
        fabric.clip_gradients(model, optimizer, clip_val=1.0, max_norm=1.0)


@pytest.mark.parametrize(
    "arguments", [{"max_norm": -1}, {"max_norm": 0}, {"clip_val": -0.5}, {"max_norm": "1"}]
)
def test_clip_gradients_refuses_a_value_that_is_not_positive(
    fabric: Fabric, arguments: dict[str, Any]
) -> None:
    model, optimizer = _model_with_gradients(fabric)
    before = [p.grad.clone() for p in model.parameters()]

    with pytest.raises(ValueError, match=r"must be a positive number"):
        fabric.clip_gradients(model, optimizer, **arguments)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters())), "gradients untouched"


def test_clip_gradients_names_swapped_arguments(fabric: Fabric) -> None:
    model, optimizer = _model_with_gradients(fabric)

    with pytest.raises(TypeError, match=r"takes the model first and the optimizer second"):
        fabric.clip_gradients(optimizer, model, max_norm=1.0)


def test_clip_gradients_under_float16_mixed_measures_unscaled_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4)

    def gradient_norm(precision: str) -> torch.Tensor:
        torch.manual_seed(0)
        fabric = (
            Fabric(accelerator="cpu", plugins=MixedPrecision("16-mixed", "cpu"))
            if precision == "16-mixed"
            else Fabric(accelerator="cpu", precision=precision)
        )
        model = TinyModel()
        model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        fabric.backward(model(x).pow(2).mean())
        norm = fabric.clip_gradients(model, optimizer, max_norm=1e6)
        optimizer.step()
        return norm

    assert gradient_norm("16-mixed").item() == pytest.approx(gradient_norm("32-true").item(), rel=1e-2)


def test_clip_gradients_under_float16_mixed_tolerates_an_overflow_step() -> None:
    """Dynamic loss scaling overflows by design now and then; that step is skipped, not fatal."""
    fabric = Fabric(accelerator="cpu", plugins=MixedPrecision("16-mixed", "cpu"))
    model = nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    scale = fabric.strategy.precision.scaler.get_scale()

    fabric.backward(model(torch.full((2, 4), 100.0)).sum() * 1e4)
    norm = fabric.clip_gradients(model, optimizer, max_norm=1.0)
    optimizer.step()

    assert not torch.isfinite(norm)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert fabric.strategy.precision.scaler.get_scale() < scale


def test_no_backward_sync_is_a_no_op_on_one_device_but_needs_the_set_up_model(fabric: Fabric) -> None:
    model = fabric.setup(TinyModel())

    with fabric.no_backward_sync(model):
        fabric.backward(model(torch.ones(1, 4)).sum())
    assert model.layer1.weight.grad is not None

    with pytest.raises(TypeError, match=r"needs the model returned by fabric.setup"):
        fabric.no_backward_sync(model.module)


def test_to_device_moves_modules_tensors_and_collections(fabric: Fabric) -> None:
    module = nn.Linear(2, 2)
    batch = {"x": torch.ones(2), "meta": [torch.zeros(1), "label"], "n": 3}

    assert fabric.to_device(module) is module
    moved = fabric.to_device(batch)

    assert moved["x"].device == fabric.device and moved["meta"][0].device == fabric.device
    assert moved["meta"][1] == "label" and moved["n"] == 3
    assert fabric.to_device(torch.ones(3)).device == fabric.device


def test_print_prints_on_rank_zero(fabric: Fabric, capsys: pytest.CaptureFixture[str]) -> None:
    fabric.print("hello", 42, sep="-")

    assert capsys.readouterr().out == "hello-42\n"


def test_collectives_on_one_process(fabric: Fabric) -> None:
    tensor = torch.arange(6.0).reshape(2, 3)

    fabric.barrier()
    fabric.barrier("named")
    assert fabric.broadcast({"step": 3}) == {"step": 3}
    gathered = fabric.all_gather(tensor)
    assert gathered.shape == (1, 2, 3) and torch.equal(gathered[0], tensor)
    gathered_dict = fabric.all_gather({"a": tensor, "b": [torch.tensor(1.0)]})
    assert gathered_dict["a"].shape == (1, 2, 3) and gathered_dict["b"][0].shape == (1,)
    assert torch.equal(fabric.all_reduce(tensor), tensor)
    assert torch.equal(fabric.all_reduce(tensor, reduce_op="sum"), tensor)
    assert fabric.all_reduce({"loss": torch.tensor(2.0)})["loss"].item() == 2.0


def test_rank_zero_first_runs_the_block_once(fabric: Fabric) -> None:
    runs = []

    with fabric.rank_zero_first():
        runs.append("global")
    with fabric.rank_zero_first(local=True):
        runs.append("local")

    assert runs == ["global", "local"]


def test_init_module_creates_modules_on_the_device(fabric: Fabric) -> None:
    with fabric.init_module():
        model = TinyModel()

    assert all(p.device == fabric.device for p in model.parameters())


def test_init_module_with_empty_init_skips_weight_initialisation(fabric: Fabric) -> None:
    torch.manual_seed(0)
    initialised = nn.Linear(8, 8)
    torch.manual_seed(0)
    random_after_seed = torch.rand(4)

    torch.manual_seed(0)
    with fabric.init_module(empty_init=True):
        skipped = nn.Linear(8, 8)
    random_after_empty_init = torch.rand(4)

    assert torch.equal(random_after_empty_init, random_after_seed), (
        "initialisation must not draw random numbers"
    )
    assert not torch.equal(skipped.weight, initialised.weight)
    assert skipped.weight.shape == (8, 8) and skipped.weight.requires_grad


def test_init_module_without_empty_init_initialises_like_pytorch(fabric: Fabric) -> None:
    torch.manual_seed(0)
    plain = nn.Linear(8, 8)
    torch.manual_seed(0)
    with fabric.init_module(empty_init=False):
        created = nn.Linear(8, 8)

    assert torch.equal(created.weight, plain.weight)


def test_init_tensor_creates_tensors_on_the_device(fabric: Fabric) -> None:
    with fabric.init_tensor():
        tensor = torch.zeros(2)

    assert tensor.device == fabric.device and tensor.dtype == torch.float32


def test_launch_without_a_function_prepares_this_process(fabric: Fabric) -> None:
    assert fabric.launch() is None


def test_launch_calls_the_function_with_fabric_and_returns_its_value(fabric: Fabric) -> None:
    def main(received: Fabric, factor: int, offset: int = 0) -> int:
        assert received is fabric
        return received.world_size * factor + offset

    assert fabric.launch(main, 5, offset=2) == 7


def test_launch_refuses_something_that_is_not_callable(fabric: Fabric) -> None:
    with pytest.raises(TypeError, match=r"expects a function to run in each process"):
        fabric.launch("main")


class RecordingCallback:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_train_epoch_end(self, epoch: int, loss: float = 0.0) -> None:
        self.calls.append(("on_train_epoch_end", epoch, loss))


class RecordingLogger:
    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, Any], int | None]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logged.append((metrics, step))


def test_call_invokes_the_hook_on_every_callback_that_defines_it() -> None:
    first, second = RecordingCallback(), RecordingCallback()
    other = RecordingLogger()  # defines other methods than the hook: skipped
    fabric = Fabric(accelerator="cpu", callbacks=[first, other, second])

    fabric.call("on_train_epoch_end", 3, loss=0.5)
    fabric.call("on_hook_nobody_defines")

    assert first.calls == second.calls == [("on_train_epoch_end", 3, 0.5)]


def test_log_and_log_dict_reach_every_logger_with_python_numbers() -> None:
    first, second = RecordingLogger(), RecordingLogger()
    fabric = Fabric(accelerator="cpu", loggers=[first, second])

    fabric.log("loss", torch.tensor(0.25), step=1)
    fabric.log_dict({"acc": torch.tensor(0.5), "lr": 0.1, "hist": torch.ones(2)}, step=2)

    assert first.logged == second.logged
    assert first.logged[0] == ({"loss": 0.25}, 1)
    metrics, step = first.logged[1]
    assert step == 2 and metrics["acc"] == 0.5 and isinstance(metrics["acc"], float)
    assert metrics["lr"] == 0.1 and torch.equal(metrics["hist"], torch.ones(2))
    assert fabric.logger is first and fabric.loggers == [first, second]


def test_a_single_logger_or_callback_need_not_be_in_a_list() -> None:
    logger, callback = RecordingLogger(), RecordingCallback()
    fabric = Fabric(accelerator="cpu", loggers=logger, callbacks=callback)

    fabric.log("x", 1)
    fabric.call("on_train_epoch_end", 0)

    assert logger.logged == [({"x": 1}, None)]
    assert callback.calls == [("on_train_epoch_end", 0, 0.0)]


def test_logger_without_loggers_says_how_to_add_one(fabric: Fabric) -> None:
    with pytest.raises(RuntimeError, match=r"pass Fabric\(loggers=\[...\]\)"):
        _ = fabric.logger
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-logger warning is tested in test_loggers.py
        fabric.log("ignored", 1.0)


def test_seed_everything_through_fabric_makes_runs_repeatable(fabric: Fabric) -> None:
    assert fabric.seed_everything(7) == 7
    first = torch.rand(3)
    Fabric.seed_everything(7)
    assert torch.equal(torch.rand(3), first)
