"""``single_xla``: the plain loop on one XLA device trains like plain PyTorch on the CPU."""

from __future__ import annotations

import pytest
import torch
from xla_helpers import (
    assert_close_states,
    cpu_state,
    make_model,
    make_optimizer,
    reference_run,
    train,
)

from fabric_core import Fabric
from fabric_xla import SingleDeviceXLAStrategy


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_training_matches_the_cpu_reference(kind):
    expected, expected_losses = reference_run(kind)
    fabric = Fabric(strategy="single_xla")
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model, kind))
    assert fabric.device.type == "xla"
    assert all(p.device.type == "xla" for p in optimizer.param_groups[0]["params"])
    losses = train(fabric, model, optimizer)
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    assert_close_states(cpu_state(model), expected)


def test_model_and_optimizer_set_up_separately_also_train():
    expected, _ = reference_run()
    fabric = Fabric(accelerator="tpu", devices=1)
    model = fabric.setup_module(make_model())
    optimizer = fabric.setup_optimizers(make_optimizer(model))
    train(fabric, model, optimizer)
    assert_close_states(cpu_state(model), expected)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-true", torch.bfloat16), ("bf16-mixed", torch.float32)]
)
def test_bfloat16_precisions_train_close_to_the_reference(precision, dtype):
    _, expected_losses = reference_run()
    fabric = Fabric(strategy="single_xla", precision=precision)
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model))
    assert next(model.parameters()).dtype == dtype
    losses = train(fabric, model, optimizer)
    assert losses == pytest.approx(expected_losses, rel=0.05, abs=0.02)
    assert losses[-1] < losses[0]


def test_checkpoint_is_cpu_tensors_and_resumes_training(tmp_path):
    fabric = Fabric(strategy="single_xla")
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model, "adam"))
    train(fabric, model, optimizer, steps=2)
    fabric.save(tmp_path / "ckpt.pt", {"model": model, "optimizer": optimizer, "step": 2})

    raw = torch.load(tmp_path / "ckpt.pt")
    assert {t.device.type for t in raw["model"].values()} == {"cpu"}
    assert raw["step"] == 2

    resumed = Fabric(strategy="single_xla")
    other = make_model()
    other, other_optimizer = resumed.setup(other, make_optimizer(other, "adam"))
    state = {"model": other, "optimizer": other_optimizer, "step": 0}
    assert resumed.load(tmp_path / "ckpt.pt", state) == {}
    assert state["step"] == 2
    assert_close_states(cpu_state(other), cpu_state(model), atol=0)
    assert train(resumed, other, other_optimizer, steps=2) == pytest.approx(
        train(fabric, model, optimizer, steps=2)
    )


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"precision": "16-mixed"},
            ValueError,
            r"does not run precision='16-mixed'.*32-true, bf16-true, bf16-mixed",
        ),
        ({"precision": "64-true"}, ValueError, r"XLA devices compute in float32 and bfloat16"),
        ({"devices": 2}, ValueError, r"runs one process on one device"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(monkeypatch, arguments, error, message):
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")
    with pytest.raises(error, match=message):
        Fabric(strategy="single_xla", **arguments)


def test_strategy_instance_checks_its_arguments():
    assert SingleDeviceXLAStrategy(device=1).root_device == torch.device("xla", 1)
    with pytest.raises(ValueError, match=r"is not an XLA device.*strategy='single_device'"):
        SingleDeviceXLAStrategy(device="cpu")
    from fabric_core.precision.precision import Precision

    with pytest.raises(ValueError, match="same argument under two names"):
        SingleDeviceXLAStrategy(precision=Precision(), precision_plugin=Precision())
