"""The MPS accelerator (Apple silicon)."""

from __future__ import annotations

import platform

import torch

from fabric_core.accelerators.accelerator import Accelerator


class MPSAccelerator(Accelerator):
    """Runs on the GPU of Apple silicon through Metal Performance Shaders (one device)."""

    device_type = "mps"
    auto_priority = 20

    @classmethod
    def is_available(cls) -> bool:
        """Whether this is an Apple silicon Mac whose torch build supports MPS."""
        return platform.system() == "Darwin" and torch.backends.mps.is_available()

    @classmethod
    def device_count(cls) -> int:
        """One when MPS is available, else zero."""
        return 1 if cls.is_available() else 0
