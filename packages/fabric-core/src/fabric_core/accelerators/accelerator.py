"""The accelerator interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from fabric_core.utilities.device_parser import DeviceRequest


class Accelerator(ABC):
    """A kind of device: whether it is present, how many there are, how to prepare one.

    Subclasses are registered by name in ``ACCELERATOR_REGISTRY`` (through the
    ``fabric_register_accelerators`` hook) and built without arguments.

    Attributes:
        device_type: The ``torch.device`` type this accelerator drives (``"cuda"``).
        auto_priority: Order in which ``accelerator="auto"`` tries accelerators (lower
            first); ``None`` keeps an accelerator out of automatic selection.
    """

    device_type: ClassVar[str]
    auto_priority: ClassVar[int | None] = None

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool:
        """Whether this machine has at least one such device."""

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why `is_available` is false, for the error ``Fabric(accelerator=...)`` raises.

        Override to name the cause and the fix (a missing package, a runtime variable).
        """
        return "this machine has no such device"

    @classmethod
    @abstractmethod
    def device_count(cls) -> int:
        """How many such devices this machine has (what ``devices=-1`` selects)."""

    @classmethod
    def default_process_group_backend(cls) -> str:
        """The ``torch.distributed`` backend multi-process strategies use by default."""
        return "gloo"

    @classmethod
    def auto_strategy(cls, total_processes: int) -> str | None:
        """The strategy ``strategy="auto"`` picks on this accelerator for ``total_processes`` processes.

        ``None`` (the default) leaves the choice to fabric: ``single_device`` for one process,
        ``ddp`` for more. An accelerator whose devices need strategies of their own (XLA)
        names them here.
        """
        return None

    def parallel_devices(self, request: DeviceRequest) -> list[torch.device]:
        """The devices the processes on one node use, one per process.

        Raises:
            ValueError: The request names more devices than the machine has.
        """
        return [torch.device(self.device_type, index) for index in request.resolve(self.device_count())]

    def setup_device(self, device: torch.device) -> None:
        """Prepare ``device`` for use by this process (e.g. make it the current CUDA device)."""

    def teardown(self) -> None:
        """Release what `setup_device` acquired."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
