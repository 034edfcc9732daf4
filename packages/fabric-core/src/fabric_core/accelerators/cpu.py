"""The CPU accelerator."""

from __future__ import annotations

import torch

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.utilities.device_parser import DeviceRequest


class CPUAccelerator(Accelerator):
    """Runs on the CPU. ``devices=N`` means N processes, each using the CPU.

    ``devices=-1`` and ``devices="auto"`` mean one process: the CPU is one device, and
    intra-op threads already use its cores.
    """

    device_type = "cpu"
    auto_priority = 100

    @classmethod
    def is_available(cls) -> bool:
        """The CPU is always available."""
        return True

    @classmethod
    def device_count(cls) -> int:
        """One: the CPU counts as a single device."""
        return 1

    def parallel_devices(self, request: DeviceRequest) -> list[torch.device]:
        """``N`` CPU devices for ``devices=N``; indices are refused because CPUs are counted."""
        if request.indices is not None:
            raise ValueError(
                f"devices={list(request.indices)} lists device indices, but CPU processes are counted, "
                f"not indexed. Pass the number of processes instead, e.g. devices={len(request.indices)}."
            )
        count = request.count if request.count is not None else 1
        return [torch.device("cpu")] * count
