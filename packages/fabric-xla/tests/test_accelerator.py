"""Counting XLA devices and parsing ``devices=`` for them (no XLA runtime is started here)."""

from __future__ import annotations

import pytest
import torch
from xla_helpers import has_tpu, run_script

from fabric_core import Fabric
from fabric_core.utilities.device_parser import parse_devices
from fabric_xla import XLAAccelerator


@pytest.fixture
def four_cpu_devices(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "4")


def devices_for(devices):
    return XLAAccelerator().parallel_devices(parse_devices(devices))


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (1, ["xla:0"]),
        (4, ["xla:0", "xla:1", "xla:2", "xla:3"]),
        (-1, 4),
        ("auto", 4),
        ([2], ["xla:2"]),
        ("3,", ["xla:3"]),
    ],
)
def test_one_device_or_all_of_them(four_cpu_devices, devices, expected):
    if isinstance(expected, int):
        expected = [f"xla:{i}" for i in range(expected)]
    assert [str(d) for d in devices_for(devices)] == expected


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (
            2,
            r"devices=2 is not possible on XLA: this host has 4 XLA device\(s\).*devices=1, or devices=4 \(or -1\)",
        ),
        (8, r"devices=8 is not possible on XLA"),
        ([0, 1], r"selects several XLA devices by index.*devices=\[i\]"),
        ([7], r"names device index 7, but only 4 device\(s\) are available"),
    ],
)
def test_a_subset_of_devices_is_refused_with_the_counts_that_work(four_cpu_devices, devices, message):
    with pytest.raises(ValueError, match=message):
        devices_for(devices)


def test_device_kinds_are_counted_from_their_variables(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.delenv("CPU_NUM_DEVICES", raising=False)
    assert XLAAccelerator.device_count() == 1
    monkeypatch.setenv("PJRT_DEVICE", "cuda")
    monkeypatch.setenv("GPU_NUM_DEVICES", "3")
    assert XLAAccelerator.device_count() == 3
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "two")
    with pytest.raises(ValueError, match=r"CPU_NUM_DEVICES='two' must be a number of devices"):
        XLAAccelerator.device_count()


@pytest.mark.skipif(has_tpu(), reason="this host has a TPU, so a device is visible")
def test_no_visible_device_says_what_to_set(monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    assert not XLAAccelerator.is_available()
    with pytest.raises(
        RuntimeError,
        match=r"The strategy runs on accelerator='tpu', but no XLA device is visible.*PJRT_DEVICE=CPU",
    ):
        Fabric(strategy="single_xla")
    with pytest.raises(
        RuntimeError,
        match=r"Fabric\(accelerator='tpu'\) was requested, but no XLA device is visible.*PJRT_DEVICE=CPU",
    ):
        Fabric(accelerator="tpu")


def test_strategy_auto_on_xla_picks_the_xla_strategies(four_cpu_devices):
    assert type(Fabric(accelerator="tpu", devices=1).strategy).__name__ == "SingleDeviceXLAStrategy"
    assert type(Fabric(accelerator="xla", devices=-1).strategy).__name__ == "XLAStrategy"
    assert XLAAccelerator.auto_strategy(8) == "xla"


def test_xla_strategies_refuse_other_accelerators():
    alternatives = {"xla": "ddp", "single_xla": "single_device", "xla_fsdp": "fsdp", "xla_spmd": "fsdp"}
    for name, alternative in alternatives.items():
        with pytest.raises(
            ValueError,
            match=rf"xla.*accelerator='cpu'.*accelerator='tpu'.*PJRT_DEVICE=CPU.*strategy='{alternative}'",
        ):
            Fabric(accelerator="cpu", strategy=name)


def test_setup_device_refuses_a_device_of_another_kind():
    with pytest.raises(ValueError, match="cannot set up the device cpu"):
        XLAAccelerator().setup_device(torch.device("cpu"))


def test_a_torch_xla_built_for_another_torch_is_explained(monkeypatch):
    import builtins
    from importlib.metadata import version

    from fabric_xla._runtime import import_torch_xla

    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "torch_xla":
            raise ImportError("_XLAC.so: undefined symbol: _ZN5torch8autograd10deleteNodeEPNS0_4NodeE")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_import)
    wanted = version("torch_xla")
    with pytest.raises(
        ImportError, match=rf"torch_xla {wanted} cannot be loaded with torch .*undefined symbol"
    ) as error:
        import_torch_xla()
    assert str(error.value).endswith(f"pip install torch=={wanted} torch_xla=={wanted}")


def test_a_backward_pass_before_the_xla_runtime_started_is_explained():
    from fabric_xla._runtime import explained_backward_errors

    assert_message = (
        "device.index() < static_cast<c10::DeviceIndex>(device_ready_queues_.size()) INTERNAL ASSERT FAILED"
    )
    explained = r"backward pass before the XLA runtime started.*fabric\.setup"
    with pytest.raises(RuntimeError, match=explained), explained_backward_errors():
        raise RuntimeError(assert_message)
    with pytest.raises(RuntimeError, match=r"^something else$"), explained_backward_errors():
        raise RuntimeError("something else")


def test_without_torch_xla_fabric_says_what_to_install_and_the_cpu_alternative():
    report = run_script("without_torch_xla.py")
    release = report["torch"]
    assert report["device_count"] == 0
    assert report["cpu_alternative"] == "cpu"
    for call, error in report["errors"].items():
        assert error is not None, f"Fabric({call}) did not fail without torch_xla"
        kind, message = error
        assert kind in ("RuntimeError", "ModuleNotFoundError"), (call, error)
        assert "needs torch_xla, which is not installed" in message, (call, message)
        assert f"pip install torch_xla=={release}" in message, (call, message)
        assert f"pip install 'torch_xla[tpu]=={release}'" in message, (call, message)
        assert "Fabric(accelerator='cpu')" in message, (call, message)
