"""Precision modes on the CPU: they train, and weights, compute and outputs have the promised dtypes."""

from __future__ import annotations

import pytest
import torch
from core_helpers import TinyModel, regression_data
from torch import nn

from fabric_core import Fabric
from fabric_core.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

# precision -> (parameter dtype, dtype the layers compute in)
PRECISIONS = {
    "32-true": (torch.float32, torch.float32),
    "64-true": (torch.float64, torch.float64),
    "16-true": (torch.float16, torch.float16),
    "bf16-true": (torch.bfloat16, torch.bfloat16),
    "16-mixed": (torch.float32, torch.float16),
    "bf16-mixed": (torch.float32, torch.bfloat16),
}


def cpu_fabric(precision: str) -> Fabric:
    """A CPU Fabric that really runs ``precision`` (float16 autocast needs the plugin on a CPU)."""
    if precision == "16-mixed":
        return Fabric(accelerator="cpu", devices=1, plugins=MixedPrecision("16-mixed", "cpu"))
    return Fabric(accelerator="cpu", devices=1, precision=precision)


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_every_precision_trains_a_small_model_with_the_promised_dtypes(precision: str) -> None:
    param_dtype, compute_dtype = PRECISIONS[precision]
    torch.manual_seed(0)
    fabric = cpu_fabric(precision)
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model, optimizer = fabric.setup(model, optimizer)
    layer_outputs: list[torch.dtype] = []
    model.layer1.register_forward_hook(lambda module, args, output: layer_outputs.append(output.dtype))
    x, y = regression_data()

    losses = []
    for _ in range(8):
        output = model(x)
        loss = nn.functional.mse_loss(output, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    assert {p.dtype for p in model.parameters()} == {param_dtype}
    assert set(layer_outputs) == {compute_dtype}, "layers must compute in the precision's dtype"
    assert output.dtype == torch.float32, "floating outputs are returned in the default dtype"
    assert losses[-1] < 0.8 * losses[0], f"{precision} did not train: {losses}"
    assert all(torch.isfinite(torch.tensor(losses)))


def test_bf16_mixed_matches_a_hand_written_autocast_loop_bit_for_bit() -> None:
    x, y = regression_data()

    def train(use_fabric: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = TinyModel()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        if use_fabric:
            fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
            model, optimizer = fabric.setup(model, optimizer)
        for _ in range(4):
            if use_fabric:
                output = model(x)
            else:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    output = model(x)
                output = output.float()
            loss = nn.functional.mse_loss(output, y)
            fabric.backward(loss) if use_fabric else loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return [p.detach().clone() for p in model.parameters()]

    for with_fabric, plain in zip(train(True), train(False), strict=True):
        assert torch.equal(with_fabric, plain)


def test_mixed_precision_keeps_float32_weights_and_uses_autocast_in_fabric_autocast() -> None:
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    layer = fabric.setup(nn.Linear(4, 4))

    with fabric.autocast():
        inside = nn.functional.linear(torch.ones(1, 4), layer.weight)
    outside = nn.functional.linear(torch.ones(1, 4), layer.weight)

    assert layer.weight.dtype == torch.float32
    assert inside.dtype == torch.bfloat16
    assert outside.dtype == torch.float32


def test_true_half_precision_casts_inputs_and_returns_float32_outputs() -> None:
    fabric = Fabric(accelerator="cpu", precision="bf16-true")
    seen: list[torch.dtype] = []
    model = fabric.setup(nn.Linear(3, 2))
    model.module.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))

    output = model(torch.ones(1, 3, dtype=torch.float32))

    assert seen == [torch.bfloat16]
    assert output.dtype == torch.float32
    assert model.weight.dtype == torch.bfloat16


def test_double_precision_leaves_integer_inputs_alone() -> None:
    fabric = Fabric(accelerator="cpu", precision="64-true")
    embedding = fabric.setup(nn.Embedding(10, 3))

    output = embedding(torch.tensor([1, 2, 3]))

    assert embedding.weight.dtype == torch.float64
    assert output.dtype == torch.float32
    assert output.shape == (3, 3)


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("32-true", torch.float32),
        ("64-true", torch.float64),
        ("16-true", torch.float16),
        ("bf16-true", torch.bfloat16),
        ("16-mixed", torch.float32),
        ("bf16-mixed", torch.float32),
    ],
)
def test_init_contexts_create_weights_and_tensors_in_the_precision_dtype(
    precision: str, dtype: torch.dtype
) -> None:
    fabric = cpu_fabric(precision)

    with fabric.init_module():
        layer = nn.Linear(2, 2)
    with fabric.init_tensor():
        tensor = torch.zeros(3)

    assert layer.weight.dtype == dtype
    assert tensor.dtype == dtype
    assert tensor.device == fabric.device
    assert torch.get_default_dtype() == torch.float32, "the default dtype is restored after the block"


def test_float16_mixed_step_is_skipped_on_overflow_and_the_scale_drops() -> None:
    fabric = cpu_fabric("16-mixed")
    model = nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = fabric.strategy.precision.scaler
    initial_scale = scaler.get_scale()
    before = [p.detach().clone() for p in model.parameters()]

    loss = model(torch.full((2, 4), 100.0)).sum() * 1e4
    fabric.backward(loss)
    optimizer.step()

    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)), (
        "step must be skipped"
    )
    assert scaler.get_scale() < initial_scale

    optimizer.zero_grad()
    fabric.backward(model(torch.ones(2, 4)).pow(2).mean())
    optimizer.step()
    assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)), (
        "a finite step runs"
    )


def test_precision_plugins_refuse_unsupported_settings() -> None:
    with pytest.raises(ValueError, match=r"use '16-mixed' or 'bf16-mixed'"):
        MixedPrecision(dtype="float8")
    with pytest.raises(ValueError, match=r"use '16-mixed' or 'bf16-mixed'"):
        MixedPrecision("16-true", "cpu")
    with pytest.raises(ValueError, match=r"bfloat16 mixed precision needs none"):
        MixedPrecision(dtype="bfloat16", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match=r"use '16-true' or 'bf16-true'"):
        HalfPrecision(dtype="float64")


def test_mixed_precision_for_a_device_type_autocast_does_not_support_is_refused() -> None:
    with pytest.raises(ValueError, match=r"torch.autocast does not support the device type 'meta'"):
        MixedPrecision(dtype="bfloat16", device_type="meta")


def test_precision_plugins_take_lightning_fabric_arguments() -> None:
    assert HalfPrecision("16-true").dtype == torch.float16
    assert HalfPrecision("bf16-true").dtype == torch.bfloat16
    assert HalfPrecision().precision == "16-true", "Lightning's default"
    mixed = MixedPrecision("16-mixed", "cpu")
    assert (mixed.dtype, mixed.device_type, mixed.precision) == (torch.float16, "cpu", "16-mixed")
    assert MixedPrecision("bf16-mixed", device="cpu").scaler is None


def test_float16_mixed_on_the_cpu_resolves_to_bfloat16_mixed_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"precision='16-mixed'\) on the CPU runs as precision='bf16-mixed'"):
        fabric = Fabric(accelerator="cpu", precision="16-mixed")

    assert fabric.strategy.precision.precision == "bf16-mixed"


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-true", torch.float16)])
def test_mixed_and_true_half_precision_cast_floating_inputs(precision: str, dtype: torch.dtype) -> None:
    seen: list[torch.dtype] = []

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            seen.extend([x.dtype, index.dtype])
            return self.layer(x)

    fabric = Fabric(accelerator="cpu", precision=precision)
    model = fabric.setup(Recorder())
    output = model(torch.ones(1, 2), torch.tensor([1]))

    assert seen == [dtype, torch.int64], "floating inputs are cast, integer inputs kept"
    assert output.dtype == torch.float32, "floating outputs come back as float32"


def test_precision_plugins_built_by_name_know_their_device_type_and_name() -> None:
    fabric = cpu_fabric("16-mixed")
    precision = fabric.strategy.precision

    assert isinstance(precision, MixedPrecision)
    assert (precision.precision, precision.device_type, precision.dtype) == ("16-mixed", "cpu", torch.float16)
    assert isinstance(precision.scaler, torch.amp.GradScaler)
    assert Precision().is_passthrough
    assert not DoublePrecision().is_passthrough
    assert "16-mixed" in repr(precision)
