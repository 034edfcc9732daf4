"""XLASPMDStrategy: one process drives every XLA device of the host; the compiler shards the program."""

from __future__ import annotations

import warnings
from typing import Any, Final

import torch
from torch import nn

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy
from fabric_core.utilities.apply_func import apply_to_tensors
from fabric_xla import _sharding
from fabric_xla._checkpoint import XLACheckpoints
from fabric_xla._moves import ParameterMoves
from fabric_xla._runtime import xla_device
from fabric_xla._steps import XLASteps

__all__ = ["XLASPMDStrategy"]

AXES: Final = _sharding.AXES


class XLASPMDStrategy(XLACheckpoints, XLASteps, Strategy):
    """Sharded training with XLA's SPMD partitioner: one process, every device of the host, one program.

    The design torch_xla recommends for new code (it is what its "FSDPv2" builds on). The
    process sees one virtual device; tensors carry *sharding annotations* over a device
    mesh (``torch_xla.distributed.spmd.Mesh``, ``mark_sharding``), and the compiler
    (GSPMD) partitions the whole training step and inserts the collectives itself.

    Glossary: an *axis* is a dimension of the device mesh, a *dim* a dimension of a tensor.
    The mesh has two axes, ``("data", "fsdp")``, of sizes ``mesh_shape``:

    - each parameter is split along its largest dim over the ``fsdp`` axis (and replicated
      over ``data``), so a device holds ``1/fsdp`` of the weights and of the optimizer state,
      which follows its parameter's sharding;
    - each batch is split along dim 0 over both axes, so every device computes on
      ``1/(data * fsdp)`` of the batch.

    The default ``mesh_shape=(1, devices)`` is fully sharded data parallel; ``(devices, 1)``
    replicates the weights (plain data parallel); anything between shards within groups of
    ``fsdp`` devices and replicates across ``data`` of them. ``optimizer.step()`` steps and
    runs the step's graph (``torch_xla.sync()``); the loss and the gradients are those of
    the whole batch, as in single-device training. Batches with a different size compile
    a new program, so keep them fixed (``drop_last=True``).

    ``fabric.all_reduce``, ``all_gather``, ``broadcast``, ``barrier`` and
    ``reduce_boolean_decision`` are the base class's single-process ones (numbers become
    tensors on the SPMD device; a gather adds a dimension of size one): the one process
    already holds every result, and the compiler put the cross-device collectives into the
    step itself. What this class adds is placement (the virtual device, sharded parameters
    and batches) and running the graph (`mark_step`, and ``sync()`` after each step).

    Checkpoints hold full CPU tensors (the runtime assembles the shards), readable by plain
    ``torch.load`` and every other strategy; loading copies into the sharded parameters.

    The process must not have used an XLA device before ``fabric.launch()`` (or the first
    ``fabric.setup``): SPMD mode is switched on then. One host for now: ``num_nodes=1``.

    Args:
        accelerator: The XLA accelerator; set by ``Fabric`` when omitted.
        checkpoint_io: How checkpoint files are written.
        precision_plugin: The precision plugin; built from ``Fabric(precision=...)`` when omitted.
        mesh_shape: The sizes of the ``("data", "fsdp")`` axes; their product is the number
            of devices. Default: ``(1, number of devices)``.
        precision: Lightning Fabric's name for ``precision_plugin`` (keyword only; pass one
            of the two).

    Raises:
        ValueError: ``mesh_shape`` does not have two positive sizes.
    """

    supported_accelerators = ("xla",)
    unsupported_accelerator_hint = (
        "Use accelerator='tpu' (without a TPU, PJRT_DEVICE=CPU and CPU_NUM_DEVICES=N run XLA on the CPU), or on "
        "the CPU strategy='fsdp' with devices=N (pip install fabric-fsdp)."
    )
    default_accelerator = "tpu"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        mesh_shape: tuple[int, int] | None = None,
        *,
        precision: Precision | None = None,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
        )
        self._mesh_shape = _sharding.check_mesh_shape(mesh_shape)
        self._num_devices: int | None = None
        self._mesh: Any = None
        self._warned_uneven = False
        self._moves = ParameterMoves()

    def configure(self, config: StrategyConfig) -> None:
        """Take every XLA device of the host into the mesh.

        Raises:
            ValueError: ``devices`` selects fewer devices than the host has, the mesh does not
                cover the devices, or ``num_nodes`` is more than one.
        """
        super().configure(config)
        available = type(config.accelerator).device_count()
        count = len(config.parallel_devices)
        if count != available:
            raise ValueError(
                f"{type(self).__name__} drives every XLA device of the host (found {available}) from one process, "
                f"but Fabric(devices=...) selected {count}. Pass devices={available} or devices=-1."
            )
        if config.num_nodes != 1:
            raise ValueError(
                f"{type(self).__name__} runs on one host, but Fabric(num_nodes={config.num_nodes}) was given. "
                "For several hosts use strategy='xla' or strategy='xla_fsdp'."
            )
        self._mesh_shape = self._mesh_shape or (1, count)
        _sharding.check_mesh_covers(self._mesh_shape, count)
        self._num_devices = count

    @property
    def mesh(self) -> Any:
        """The ``torch_xla.distributed.spmd.Mesh`` (after ``setup_environment``)."""
        if self._mesh is None:
            raise RuntimeError(
                f"{type(self).__name__} builds its mesh in setup_environment(); use it through Fabric."
            )
        return self._mesh

    @property
    def root_device(self) -> torch.device:
        """The virtual XLA device that spans the mesh."""
        if self._mesh is None:
            raise RuntimeError(
                f"The SPMD device exists once {type(self).__name__} has switched the process to SPMD mode; call "
                "fabric.launch() or fabric.setup(...) first."
            )
        return xla_device()

    def setup_environment(self) -> None:
        """Switch the process to SPMD mode and build the ``("data", "fsdp")`` mesh over all devices."""
        if self._mesh is None:
            assert self._mesh_shape is not None and self._num_devices is not None, "configure() first"
            self._mesh = _sharding.build_mesh(self._mesh_shape, self._num_devices)
        super().setup_environment()

    # -- modules and batches ------------------------------------------------------------

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Annotate every parameter with its sharding over the ``fsdp`` axis (see the class docstring)."""
        _sharding.shard_parameters(module, self.mesh)
        return module

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        """Move ``batch`` to the device and split every tensor's dim 0 over all devices of the mesh."""
        moved = super().batch_to_device(batch, device)
        return apply_to_tensors(moved, self._shard_batch_tensor)

    def _shard_batch_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "xla" or tensor.dim() == 0:
            return tensor
        if tensor.shape[0] % self.mesh.size() and not self._warned_uneven:
            self._warned_uneven = True
            warnings.warn(
                f"A batch of {tensor.shape[0]} rows is split over {self.mesh.size()} devices unevenly; XLA pads "
                "it, which wastes work. Use a batch size divisible by the number of devices.",
                stacklevel=3,
            )
        return _sharding.shard_batch(tensor, self.mesh)

    # -- checkpoints --------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"XLASPMDStrategy(mesh_shape={self._mesh_shape}, axes={AXES}, precision={self._precision!r})"
