"""The seed's XLA API as written: constructor signatures, ``mark_step``, and its training loop on XLA:CPU."""

from __future__ import annotations

import pytest
import torch
import torch_xla.debug.metrics as metrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from xla_helpers import BATCH, make_model

from fabric_core import Fabric
from fabric_core.io.checkpoint_io import TorchCheckpointIO
from fabric_core.precision.precision import Precision
from fabric_xla import (
    SingleDeviceXLAStrategy,
    XLAAccelerator,
    XLAEnvironment,
    XLAFSDPStrategy,
    XLASPMDStrategy,
    XLAStrategy,
)

STEPS = 8


def seed_dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(2)
    return TensorDataset(
        torch.randn(STEPS * BATCH, 4, generator=generator), torch.randn(STEPS * BATCH, 3, generator=generator)
    )


def compute_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs), targets)


def cpu_losses_of_the_seed_loop() -> list[float]:
    """The seed's loop in plain PyTorch on the CPU (as written: no zero_grad, gradients add up)."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = []
    for batch in DataLoader(seed_dataset(), batch_size=BATCH):
        loss = compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("strategy", "precision", "rel"),
    [("single_xla", "32-true", 1e-4), ("xla", "bf16-mixed", 0.05)],
    ids=["single_xla", "seed-snippet-xla-bf16-mixed"],
)
def test_the_seeds_xla_loop_runs_as_written_on_xla_cpu(strategy, precision, rel):
    fabric = Fabric(accelerator="tpu", strategy=strategy, devices=1, precision=precision)
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.02))
    dataloader = fabric.setup_dataloaders(DataLoader(seed_dataset(), batch_size=BATCH))
    losses, compiled = [], []
    # Mark XLA steps for optimal compilation
    for batch in dataloader:
        loss = compute_loss(model, batch)
        fabric.backward(loss)
        optimizer.step()
        # Mark step boundary for XLA
        if hasattr(fabric.strategy, "mark_step"):
            fabric.strategy.mark_step()
        losses.append(loss.detach())
        compiled.append(metrics.metric_data("CompileTime")[0])
    assert [loss.device.type for loss in losses] == ["xla"] * STEPS
    assert [loss.item() for loss in losses] == pytest.approx(cpu_losses_of_the_seed_loop(), rel=rel)
    # The graph is cut at every step: once its shape settles, no step compiles a new program.
    assert compiled[-1] == compiled[STEPS // 2]


def test_every_xla_strategy_has_mark_step():
    for cls in (XLAStrategy, SingleDeviceXLAStrategy, XLAFSDPStrategy, XLASPMDStrategy):
        assert callable(getattr(cls, "mark_step", None)), cls.__name__
    for name in ("xla", "single_xla", "xla_fsdp"):
        fabric = Fabric(strategy=name, devices=1)
        fabric.launch()
        assert hasattr(fabric.strategy, "mark_step"), name
        pending = torch.ones(2, device=fabric.device) * 3
        fabric.strategy.mark_step()  # runs the pending graph; nothing left to run afterwards
        fabric.strategy.mark_step()
        assert pending.cpu().tolist() == [3.0, 3.0]


def test_constructors_take_the_seeds_arguments_in_the_seeds_order():
    plugin, io, environment = Precision(), TorchCheckpointIO(), XLAEnvironment()
    devices = [torch.device("xla", 0)]

    xla = XLAStrategy(False, devices, environment, io, plugin, True)
    assert (xla._sync_module_states, xla.parallel_devices, xla._debug) == (False, devices, True)
    assert xla.cluster_environment is environment and xla.checkpoint_io is io and xla.precision is plugin
    XLAStrategy(
        sync_module_states=True,
        parallel_devices=None,
        cluster_environment=None,
        checkpoint_io=None,
        precision_plugin=None,
        debug=False,
    )

    accelerator = XLAAccelerator()
    single = SingleDeviceXLAStrategy(torch.device("xla", 0), accelerator, io, plugin)
    assert single.root_device == torch.device("xla", 0)
    assert single.accelerator is accelerator and single.checkpoint_io is io and single.precision is plugin
    SingleDeviceXLAStrategy(device=None, accelerator=None, checkpoint_io=None, precision_plugin=None)

    fsdp = XLAFSDPStrategy(accelerator, devices, io, plugin, {nn.Linear}, reshard_after_forward=False)
    assert fsdp.accelerator is accelerator and fsdp.parallel_devices == devices
    assert fsdp.checkpoint_io is io and fsdp.precision is plugin
    assert (
        callable(fsdp._fsdp_kwargs["auto_wrap_policy"])
        and fsdp._fsdp_kwargs["reshard_after_forward"] is False
    )
    XLAFSDPStrategy(
        accelerator=None,
        parallel_devices=None,
        checkpoint_io=None,
        precision_plugin=None,
        auto_wrap_policy=None,
    )


def test_arguments_the_seed_does_not_list_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        XLAStrategy(True, None, None, None, None, False, XLAAccelerator())  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        SingleDeviceXLAStrategy(None, None, None, None, Precision())  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        XLAFSDPStrategy(None, None, None, None, None, XLAEnvironment())  # type: ignore[misc]
    strategy = XLAStrategy(accelerator=XLAAccelerator(), start_method="fork", precision=Precision())
    assert strategy.launcher.start_method == "fork"  # type: ignore[union-attr]
    with pytest.raises(
        TypeError,
        match=r"XLAStrategy got unknown argument\(s\) find_unused_parameters\. It takes: sync_module_states, "
        r"parallel_devices, cluster_environment, checkpoint_io, precision_plugin, debug, accelerator",
    ):
        XLAStrategy(find_unused_parameters=True)
    with pytest.raises(ValueError, match="same argument under two names"):
        XLAFSDPStrategy(precision_plugin=Precision(), precision=Precision())


def test_only_xla_fsdp_refuses_setting_up_a_model_twice():
    assert XLAFSDPStrategy.allows_repeated_setup is False
    assert XLAStrategy.allows_repeated_setup is True
    assert SingleDeviceXLAStrategy.allows_repeated_setup is True
    assert XLASPMDStrategy.allows_repeated_setup is True
