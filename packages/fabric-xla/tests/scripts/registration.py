"""Registering, listing and configuring the XLA names must not import torch_xla."""

from __future__ import annotations

import json
import subprocess
import sys

import fabric_xla
from fabric_core import Fabric
from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY, ENVIRONMENT_REGISTRY
from fabric_core.accelerators import ACCELERATOR_REGISTRY
from fabric_core.strategies import STRATEGY_REGISTRY

names = ("xla", "single_xla", "xla_fsdp", "xla_spmd")
providers = {name: STRATEGY_REGISTRY.entry(name).provider for name in names}
tpu = ACCELERATOR_REGISTRY.get_class("tpu")
auto = Fabric(accelerator="auto", devices=1)
environment = ENVIRONMENT_REGISTRY.get_class("xla")
checkpoint_format = CHECKPOINT_FORMAT_REGISTRY.get_class("xla_fsdp")
listing = subprocess.run(
    [sys.executable, "-m", "fabric_core", "strategies", "--json"], capture_output=True, text=True, check=True
)
rows = {row["name"]: row["status"] for row in json.loads(listing.stdout)}
xla = Fabric(strategy="xla", devices=-1)
spmd = Fabric(strategy="xla_spmd", devices=-1)
on_tpu = Fabric(accelerator="tpu", devices=1)
print(
    json.dumps(
        {
            "exports": sorted(name for name in fabric_xla.__all__ if name != "__version__"),
            "providers": providers,
            "tpu_target": ACCELERATOR_REGISTRY.entry("tpu").target_path,
            "xla_alias_target": ACCELERATOR_REGISTRY.entry("xla").target_path,
            "tpu_available": tpu.is_available(),
            "tpu_devices": tpu.device_count(),
            "auto_device": str(auto.device),
            "environment_detected": environment.detect(),
            "format": checkpoint_format.__name__,
            "xla_world_size_before_launch": xla.world_size,
            "xla_needs_function": xla.strategy.launcher.requires_function,
            "spmd": type(spmd.strategy).__name__,
            "auto_strategy_on_tpu": type(on_tpu.strategy).__name__,
            "listed": {name: rows[name] for name in names},
            "torch_xla_imported": "torch_xla" in sys.modules,
        }
    )
)
