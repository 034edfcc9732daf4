"""``torch.nn.DataParallel``: one process, the batch split across several CUDA devices."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy

_T = TypeVar("_T")


class DataParallelStrategy(Strategy):
    """Replicates the module on each CUDA device in every forward pass (``strategy="dp"``).

    One Python process scatters each batch across the devices, runs the replicas and
    gathers the outputs on the first device. It is simple but slower than ``ddp``
    (replication each step, one interpreter); prefer ``ddp`` for real training.

    Args:
        accelerator: The accelerator (CUDA).
        parallel_devices: The CUDA devices; set by the connector when omitted.
        checkpoint_io: How checkpoints are written.
        precision: The precision plugin.
    """

    supported_accelerators = ("cuda",)

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision=precision)
        self._parallel_devices = parallel_devices

    def configure(self, config: StrategyConfig) -> None:
        """Adopt the CUDA devices of this node (one node only)."""
        self._configure_parts(config)
        if config.num_nodes != 1:
            raise ValueError(
                f"strategy='dp' runs in one process on one node, not num_nodes={config.num_nodes}."
            )
        if self._parallel_devices is None:
            self._parallel_devices = list(config.parallel_devices)

    @property
    def root_device(self) -> torch.device:
        """The first device, where outputs are gathered."""
        assert self._parallel_devices, "DataParallelStrategy has no devices; build it through Fabric."
        return self._parallel_devices[0]

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move the module to the first device and wrap it in ``torch.nn.DataParallel``."""
        self.module_to_device(module)
        return nn.DataParallel(module, device_ids=[d.index for d in self._parallel_devices or []])

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """The wrapped module's state dict, without DataParallel's ``module.`` prefix."""
        return (module.module if isinstance(module, nn.DataParallel) else module).state_dict()

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load into the wrapped module."""
        (module.module if isinstance(module, nn.DataParallel) else module).load_state_dict(
            state_dict, strict=strict
        )

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = "mean") -> Any:
        """Average (or sum) a tensor that DataParallel gathered from the replicas."""
        if isinstance(tensor, torch.Tensor) and tensor.ndim > 0:
            return tensor.sum() if reduce_op == "sum" else tensor.float().mean()
        return tensor

    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """One process: a leading dimension of size one."""
        return tensor.unsqueeze(0)

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        """One process: ``obj`` unchanged."""
        return obj

    def barrier(self, name: str | None = None) -> None:
        """One process: nothing to wait for."""
