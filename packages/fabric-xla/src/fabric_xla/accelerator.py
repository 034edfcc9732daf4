"""The XLA accelerator: which XLA devices this host has, counted without starting the XLA runtime."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Final

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.utilities.device_parser import DeviceRequest
from fabric_xla._runtime import import_torch_xla, is_installed, missing_torch_xla

__all__ = ["XLAAccelerator", "tpu_chip_count"]

_GOOGLE_PCI_VENDOR: Final = "0x1ae0"
_TPU_PCI_DEVICES: Final = frozenset({"0x0027", "0x005e", "0x0063", "0x006f", "0x0076"})
"""PCI device ids of TPU v2/v3, v4, v5e, v6e and 7x chips."""

_NO_DEVICE: Final = (
    "No XLA device is visible. On a TPU host, install torch_xla with its TPU runtime (pip install "
    "'torch_xla[tpu]'); to run on the CPU through XLA, set PJRT_DEVICE=CPU (and CPU_NUM_DEVICES=N for N devices)."
)


class XLAAccelerator(Accelerator):
    """TPUs and other XLA devices, driven by torch_xla (registered as ``tpu`` and ``xla``).

    The device kind is the one torch_xla uses, ``PJRT_DEVICE``:

    - unset or ``TPU``: the TPU cores of this host (one per chip from TPU v4 on, two before);
    - ``CPU``: ``CPU_NUM_DEVICES`` XLA:CPU devices (one by default), for development and tests;
    - ``CUDA``: ``GPU_NUM_DEVICES``, or the visible CUDA devices.

    Counting never starts the XLA runtime (which must start after ``torch_xla.launch`` has
    created the processes): it reads environment variables and the PCI bus, and imports
    torch_xla only on a host with TPU chips, to ask how many cores a chip has.

    ``accelerator="auto"`` does not pick this accelerator (its ``auto_priority`` is
    ``None``); ask for ``accelerator="tpu"`` or an XLA strategy. With ``accelerator="tpu"``,
    ``strategy="auto"`` is ``single_xla`` for one device and ``xla`` for more.

    ``devices`` takes 1 (one process on one device), the number of devices of the host, or
    -1 / ``"auto"`` (all of them), or one index (``devices=[2]``): XLA runs one process on one
    device or one process per device of the host, nothing in between.
    """

    device_type = "xla"
    auto_priority = None

    @classmethod
    def is_available(cls) -> bool:
        """Whether torch_xla is installed and this host has at least one XLA device."""
        return is_installed() and cls.device_count() > 0

    @classmethod
    def unavailable_reason(cls) -> str:
        """A missing torch_xla (with the install command for this torch release), or no visible device."""
        if not is_installed():
            return missing_torch_xla()
        return _NO_DEVICE

    @classmethod
    def device_count(cls) -> int:
        """How many XLA devices of the ``PJRT_DEVICE`` kind this host has (0 without torch_xla)."""
        if not is_installed():
            return 0
        kind = os.environ.get("PJRT_DEVICE", "").upper()
        if kind == "CPU":
            return _count_from("CPU_NUM_DEVICES", 1)
        if kind in ("CUDA", "GPU"):
            return _count_from("GPU_NUM_DEVICES", torch.cuda.device_count())
        if kind in ("", "TPU"):
            return _tpu_core_count()
        return 1

    @classmethod
    def auto_strategy(cls, total_processes: int) -> str:
        """``strategy="auto"`` on XLA devices: ``single_xla`` for one device, ``xla`` for more."""
        return "single_xla" if total_processes == 1 else "xla"

    def parallel_devices(self, request: DeviceRequest) -> list[torch.device]:
        """``xla:i`` devices for ``devices=``: one device, or every device of the host.

        Raises:
            ModuleNotFoundError: torch_xla is not installed (the message says how to install it).
            RuntimeError: No XLA device is visible (the message says what to install or set).
            ValueError: ``devices`` asks for a subset of several devices, or for more than exist.
        """
        if not is_installed():
            raise ModuleNotFoundError(missing_torch_xla(), name="torch_xla")
        available = self.device_count()
        if available == 0:
            raise RuntimeError(_NO_DEVICE)
        if request.indices is not None:
            if len(request.indices) != 1:
                raise ValueError(
                    f"devices={list(request.indices)} selects several XLA devices by index, but XLA runs either one "
                    f"device (devices=[i] or devices=1) or all {available} of this host (devices={available} or -1)."
                )
            return [torch.device("xla", request.resolve(available)[0])]
        count = available if request.all or request.auto else request.count
        if count not in (1, available):
            choices = "devices=1" if available == 1 else f"devices=1, or devices={available} (or -1) for all"
            raise ValueError(
                f"devices={count} is not possible on XLA: this host has {available} XLA device(s), and XLA runs "
                f"one process per device of the host or a single device. Pass {choices}."
            )
        return [torch.device("xla", index) for index in range(count)]

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` this process's default XLA device (the one ``torch_xla.sync()`` runs).

        This starts the XLA runtime in the process.

        Raises:
            ValueError: ``device`` is not an XLA device.
        """
        if device.type != "xla":
            raise ValueError(
                f"The XLA accelerator cannot set up the device {device}; it runs on 'xla' devices."
            )
        import_torch_xla().device(device.index or 0)


def tpu_chip_count() -> int:
    """The number of TPU chips on this host's PCI bus (reads ``/sys``, imports nothing)."""
    chips = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        folder = Path(vendor).parent
        try:
            if Path(vendor).read_text().strip() != _GOOGLE_PCI_VENDOR:
                continue
            if (folder / "device").read_text().strip() in _TPU_PCI_DEVICES:
                chips += 1
        except OSError:
            continue
    return chips


def _tpu_core_count() -> int:
    chips = tpu_chip_count()
    if chips == 0:
        return 0
    try:
        from torch_xla._internal import tpu

        return chips * tpu.num_logical_cores_per_chip()
    except Exception:  # the TPU metadata server is unreachable: count one core per chip
        return chips


def _count_from(variable: str, default: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{variable}={value!r} must be a number of devices, such as {variable}=2.")
    return int(value)
