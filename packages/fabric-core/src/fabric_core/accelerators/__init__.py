"""Accelerators: which device type runs the computation and how many devices there are."""

from fabric_core._registries import ACCELERATOR_REGISTRY, AcceleratorRegistry
from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.accelerators.cpu import CPUAccelerator
from fabric_core.accelerators.cuda import CUDAAccelerator
from fabric_core.accelerators.mps import MPSAccelerator

__all__ = [
    "ACCELERATOR_REGISTRY",
    "Accelerator",
    "AcceleratorRegistry",
    "CPUAccelerator",
    "CUDAAccelerator",
    "MPSAccelerator",
]
