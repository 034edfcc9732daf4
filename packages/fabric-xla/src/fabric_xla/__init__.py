"""fabric-xla: run a fabric training loop on TPUs and other XLA devices through torch_xla.

Installing it registers the strategies ``xla``, ``single_xla``, ``xla_fsdp`` and
``xla_spmd``, the accelerator ``tpu`` (alias ``xla``), the ``xla`` cluster environment and
the ``xla_fsdp`` checkpoint format. Names are imported on first access, and no module of
this package imports torch_xla until an XLA strategy or accelerator is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.lazy import lazy_exports
from fabric_xla.__about__ import __version__

if TYPE_CHECKING:
    from fabric_xla.accelerator import XLAAccelerator
    from fabric_xla.environment import XLAEnvironment
    from fabric_xla.fsdp import XLAFSDPStrategy
    from fabric_xla.launcher import XLALauncher
    from fabric_xla.single_device import SingleDeviceXLAStrategy
    from fabric_xla.spmd import XLASPMDStrategy
    from fabric_xla.strategy import XLAStrategy

__all__ = [
    "SingleDeviceXLAStrategy",
    "XLAAccelerator",
    "XLAEnvironment",
    "XLAFSDPStrategy",
    "XLALauncher",
    "XLASPMDStrategy",
    "XLAStrategy",
    "__version__",
]

_EXPORTS = {
    "SingleDeviceXLAStrategy": "fabric_xla.single_device",
    "XLAAccelerator": "fabric_xla.accelerator",
    "XLAEnvironment": "fabric_xla.environment",
    "XLAFSDPStrategy": "fabric_xla.fsdp",
    "XLALauncher": "fabric_xla.launcher",
    "XLASPMDStrategy": "fabric_xla.spmd",
    "XLAStrategy": "fabric_xla.strategy",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
