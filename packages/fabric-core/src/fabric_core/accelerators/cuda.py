"""The CUDA accelerator."""

from __future__ import annotations

import torch

from fabric_core.accelerators.accelerator import Accelerator


class CUDAAccelerator(Accelerator):
    """Runs on NVIDIA GPUs, one device per process (registered as ``cuda`` and ``gpu``)."""

    device_type = "cuda"
    auto_priority = 10

    @classmethod
    def is_available(cls) -> bool:
        """Whether a CUDA device is visible (does not initialise CUDA)."""
        return cls.device_count() > 0

    @classmethod
    def device_count(cls) -> int:
        """The number of visible CUDA devices (does not initialise CUDA)."""
        return torch.cuda.device_count()

    @classmethod
    def default_process_group_backend(cls) -> str:
        """NCCL, the collective library for NVIDIA GPUs."""
        return "nccl"

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` the current CUDA device of this process.

        Raises:
            ValueError: ``device`` is not a CUDA device.
        """
        if device.type != "cuda":
            raise ValueError(f"The CUDA accelerator cannot set up the device {device}.")
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        """Return cached GPU memory to the driver."""
        torch.cuda.empty_cache()
