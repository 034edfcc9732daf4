"""``torch.nn.DataParallel``: one process, the batch split across several CUDA devices."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy
from fabric_core.utilities.apply_func import as_tensor


class DataParallelStrategy(Strategy):
    """Replicates the module on each CUDA device in every forward pass (``strategy="dp"``).

    One Python process scatters each batch across the devices, runs the replicas and
    gathers the outputs on the first device. It is simple but slower than ``ddp``
    (replication each step, one interpreter); prefer ``ddp`` for real training.

    Args:
        parallel_devices: The CUDA devices; set by the connector when omitted.
        accelerator: The accelerator (CUDA).
        checkpoint_io: How checkpoints are written.
        precision_plugin: The precision plugin.
        precision: Lightning Fabric's name for ``precision_plugin``.
    """

    supported_accelerators = ("cuda",)
    unsupported_accelerator_hint = (
        "On a CPU, run one process per core with strategy='ddp' and devices=N (pip install fabric-ddp)."
    )

    def __init__(
        self,
        parallel_devices: list[torch.device] | None = None,
        *,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        precision: Precision | None = None,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
        )
        self._parallel_devices = parallel_devices

    def configure(self, config: StrategyConfig) -> None:
        """Adopt the CUDA devices of this node (one node only)."""
        super().configure(config)
        if config.num_nodes != 1:
            raise ValueError(
                f"strategy='dp' runs in one process on one node, not num_nodes={config.num_nodes}. "
                "Use strategy='ddp' (pip install fabric-ddp) for several nodes."
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
        """Load into the wrapped module, checked as the base class does."""
        inner = module.module if isinstance(module, nn.DataParallel) else module
        super().load_module_state_dict(inner, state_dict, strict=strict)

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = None) -> Any:
        """Average (``reduce_op="sum"``: sum) a tensor that DataParallel gathered from the replicas.

        A scalar (or a Python number) is already the whole result and is returned as a tensor;
        ``group`` is ignored (there is one process).
        """
        tensor = as_tensor(tensor, self.root_device)
        if isinstance(tensor, torch.Tensor) and tensor.ndim > 0:
            return tensor.sum() if reduce_op == "sum" else tensor.float().mean()
        return tensor
