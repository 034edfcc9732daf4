"""The entry point registers every XLA name, and nothing imports torch_xla before an XLA device is used."""

from __future__ import annotations

import pytest
from xla_helpers import run_script

from fabric_core import Fabric


def test_registering_listing_and_configuring_leave_torch_xla_unimported():
    report = run_script("registration.py", env={"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"})
    assert report["torch_xla_imported"] is False
    assert report["exports"] == [
        "SingleDeviceXLAStrategy",
        "XLAAccelerator",
        "XLAEnvironment",
        "XLAFSDPStrategy",
        "XLALauncher",
        "XLASPMDStrategy",
        "XLAStrategy",
    ]
    assert set(report["providers"].values()) == {"fabric-xla"}
    assert report["tpu_target"] == report["xla_alias_target"] == "fabric_xla.accelerator:XLAAccelerator"
    assert report["tpu_available"] is True
    assert report["tpu_devices"] == 2
    assert report["auto_device"] == "cpu"  # accelerator="auto" never picks XLA
    assert report["environment_detected"] is False
    assert report["format"] == "XLAFSDPFormat"
    assert report["xla_world_size_before_launch"] == 2
    assert report["xla_needs_function"] is True
    assert report["spmd"] == "XLASPMDStrategy"
    assert report["auto_strategy_on_tpu"] == "SingleDeviceXLAStrategy"
    assert set(report["listed"].values()) == {"available"}


def test_two_devices_need_fabric_launch_with_a_function(monkeypatch):
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")
    fabric = Fabric(accelerator="tpu", devices=2)
    assert type(fabric.strategy).__name__ == "XLAStrategy"
    with pytest.raises(TypeError, match=r"fabric.launch\(train, \*args\)"):
        fabric.launch()
    with pytest.raises(RuntimeError, match=r"Call fabric\.launch"):
        _ = fabric.strategy.root_device
