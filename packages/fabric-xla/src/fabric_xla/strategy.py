"""XLAStrategy: one process per XLA device, gradients all-reduced at each optimizer step."""

from __future__ import annotations

import os
import weakref
from typing import Any, Final, TypeVar

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.parallel import ParallelStrategy
from fabric_core.utilities.apply_func import as_tensor
from fabric_xla import _collectives
from fabric_xla._checkpoint import XLACheckpoints
from fabric_xla._moves import ParameterMoves
from fabric_xla._options import passed_as_plugin, refuse_unknown_arguments
from fabric_xla._runtime import sync, xla_device
from fabric_xla._steps import XLASteps
from fabric_xla.environment import XLAEnvironment
from fabric_xla.launcher import XLALauncher, XLAStartMethod

__all__ = ["XLAStrategy"]

_T = TypeVar("_T")

DEBUG_VARIABLE: Final = "PT_XLA_DEBUG_LEVEL"


class XLAStrategy(XLACheckpoints, XLASteps, ParallelStrategy):
    """Data-parallel training on XLA devices (TPU cores): one process per device.

    Every process holds a full replica of the model and trains on its shard of the data.
    XLA records the forward and backward passes lazily as a graph; at ``optimizer.step()``
    the strategy all-reduces the gradients (averaging them over the processes with one XLA
    collective), steps the optimizer and calls ``torch_xla.sync()``, which compiles the
    step's graph the first time and runs it. Later steps with the same shapes reuse the
    compiled program, so keep batch shapes fixed (``drop_last=True``).

    Gradients are reduced only at the optimizer step, so gradient accumulation costs no
    communication and ``fabric.no_backward_sync`` has nothing to skip. Checkpoints are
    written by global rank 0 as CPU tensors, readable by plain ``torch.load`` and by every
    other strategy.

    Processes are started by `XLALauncher` from
    ``fabric.launch(fn)``; with one device everything runs in the calling process.

    The loop of Lightning Fabric and of the seed runs unchanged: ``optimizer.step()``
    already runs the step's graph, and `mark_step` (called after it by loops that
    check ``hasattr(fabric.strategy, "mark_step")``) finds nothing left to run.

    Args:
        sync_module_states: Broadcast the parameters and buffers of global rank 0 to every
            process in ``setup``, so all replicas start equal.
        parallel_devices: One device per process on this host; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from: `XLAEnvironment`
            (the XLA runtime) unless given.
        checkpoint_io: How checkpoint files are written.
        precision_plugin: The precision plugin; built from ``Fabric(precision=...)`` when omitted.
        debug: Print XLA's compilation and execution analysis (``PT_XLA_DEBUG_LEVEL=2``),
            which reports recompilations and unexpected transfers to the CPU.
        accelerator: The XLA accelerator; set by ``Fabric`` when omitted (keyword only).
        start_method: ``"spawn"`` or ``"fork"`` (notebooks), how ``torch_xla.launch`` starts
            the processes (keyword only).
        precision: Lightning Fabric's name for ``precision_plugin`` (keyword only; pass one
            of the two).
        **kwargs: Accepted for the seed's signature; XLAStrategy takes no other argument, so
            any name here is refused.

    Raises:
        TypeError: ``kwargs`` is not empty (the message lists the arguments there are).
        ValueError: Both ``precision_plugin`` and ``precision`` were given, or ``start_method``
            is not one ``torch_xla.launch`` offers.
    """

    supported_accelerators = ("xla",)
    unsupported_accelerator_hint = (
        "Use accelerator='tpu' (without a TPU, PJRT_DEVICE=CPU runs XLA on the CPU), or on the CPU "
        "strategy='ddp' with devices=N (pip install fabric-ddp)."
    )
    default_accelerator = "tpu"

    def __init__(
        self,
        sync_module_states: bool = True,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        debug: bool = False,
        *,
        accelerator: Accelerator | None = None,
        start_method: XLAStartMethod = "spawn",
        precision: Precision | None = None,
        **kwargs: Any,
    ) -> None:
        refuse_unknown_arguments(type(self).__name__, XLAStrategy.__init__, kwargs)
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            cluster_environment=cluster_environment,
            precision=precision,
        )
        self._launcher = XLALauncher(self, start_method)
        self._environment_given = cluster_environment is not None
        self._sync_module_states = sync_module_states
        self._debug = debug
        self._launched = False
        self._reduced: weakref.WeakSet[Optimizer] = weakref.WeakSet()
        self._moves = ParameterMoves()

    # -- configuration ------------------------------------------------------------------

    def configure(self, config: StrategyConfig) -> None:
        """Adopt devices and node count; ranks come from the XLA runtime unless an environment was passed.

        Raises:
            ValueError: A single device other than ``xla:0`` was selected (each XLA process
                drives its own first device; use ``strategy="single_xla"`` for a chosen one).
        """
        if not self._environment_given and not passed_as_plugin(config, config.cluster_environment):
            self._cluster_environment = XLAEnvironment()
        super().configure(config)
        devices = self.parallel_devices
        if len(devices) == 1 and devices[0].index not in (None, 0):
            raise ValueError(
                f"{type(self).__name__} runs one process per device of the host, each on its own first device, "
                f"so it cannot pick {devices[0]}. Use Fabric(strategy='single_xla', devices=[{devices[0].index}])."
            )

    # -- process and device -------------------------------------------------------------

    @property
    def root_device(self) -> torch.device:
        """This process's XLA device.

        Raises:
            RuntimeError: The processes are not started yet (before ``fabric.launch()``).
        """
        if not self._launched:
            raise RuntimeError(
                f"The XLA device of each process exists once the processes run. Call fabric.launch(fn) first; "
                f"{type(self).__name__} creates the devices in setup_environment()."
            )
        return xla_device()

    @property
    def global_rank(self) -> int:
        """This process's rank (0 until the processes are started)."""
        return super().global_rank if self._launched else 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its host (0 until the processes are started)."""
        return super().local_rank if self._launched else 0

    @property
    def node_rank(self) -> int:
        """The index of this process's host (0 until the processes are started)."""
        return super().node_rank if self._launched else 0

    @property
    def world_size(self) -> int:
        """The number of processes (the expected number until they are started)."""
        return super().world_size if self._launched else self.num_processes * self.num_nodes

    def setup_environment(self) -> None:
        """Make this process's XLA device ready; the XLA runtime, not torch.distributed, connects the processes."""
        if self._debug:
            os.environ[DEBUG_VARIABLE] = "2"
        self._launched = True
        self.accelerator.setup_device(self.root_device)

    def teardown(self) -> None:
        """Release the parts, and undo ``debug``'s environment variable."""
        if self._debug:
            os.environ.pop(DEBUG_VARIABLE, None)
        super().teardown()

    # -- modules and the step -----------------------------------------------------------

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Return the module; with ``sync_module_states``, rank 0's weights are broadcast to all first."""
        if self._sync_module_states and self._launched:
            import torch_xla.core.xla_model as xm

            xm.broadcast_master_param(module)
        return module

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Average the gradients over the processes, step, and run the step's graph (``torch_xla.sync()``).

        A ``closure`` (LBFGS) is run first and the gradients it produced are averaged before
        the optimizer uses them.
        """
        closure = kwargs.get("closure")
        if closure is not None:

            def reduced_closure() -> Any:
                loss = closure()
                self._reduce_gradients(optimizer)
                return loss

            kwargs["closure"] = reduced_closure
        else:
            self._reduce_gradients(optimizer)
        result = self.precision.optimizer_step(optimizer, **kwargs)
        self._reduced.discard(optimizer)
        sync()
        return result

    # Same parameters as Strategy.clip_gradients_norm (the contract every strategy keeps); only the body is its own.
    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Average the gradients over the processes first, then clip their joint norm (the same on every process)."""
        self._reduce_gradients(optimizer)
        return super().clip_gradients_norm(module, optimizer, max_norm, norm_type, error_if_nonfinite)

    def clip_gradients_value(self, module: nn.Module, optimizer: Optimizer, clip_val: float) -> None:
        """Average the gradients over the processes first, then clamp every element."""
        self._reduce_gradients(optimizer)
        super().clip_gradients_value(module, optimizer, clip_val)

    def _reduce_gradients(self, optimizer: Optimizer) -> None:
        if optimizer in self._reduced or self.world_size == 1:
            return
        import torch_xla.core.xla_model as xm

        xm.reduce_gradients(optimizer)
        self._reduced.add(optimizer)

    # -- collectives --------------------------------------------------------------------
    # XLA collectives once the processes run. Before fabric.launch() there is one process,
    # and each method answers as the base Strategy's single-process default would, but
    # inline: ParallelStrategy's fallback asks torch.distributed, which the XLA runtime does
    # not use, and the base's reduce/all_gather need root_device, which has no XLA device yet
    # (numbers become CPU tensors instead).

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = None) -> Any:
        """Reduce ``tensor`` over the processes with an XLA all-reduce.

        Args:
            tensor: A tensor, or a Python or NumPy number (turned into a tensor on this
                process's device first, so ``loss.item()`` is reduced too).
            group: A list of equally sized lists of ranks (``None``: all processes).
            reduce_op: ``"mean"``, ``"sum"``, ``"max"``, ``"min"`` or ``"product"``;
                ``None`` means ``"mean"``.

        Raises:
            TypeError: ``tensor`` is neither a tensor nor a number.
        """
        value = self._as_tensor(tensor, "reduce")
        if not self._launched:
            return value
        return _collectives.all_reduce(value, reduce_op or "mean", self.world_size, group)

    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """Stack ``tensor`` from every process along a new leading dimension of size ``world_size``.

        A Python or NumPy number is turned into a tensor on this process's device first.

        Raises:
            TypeError: ``tensor`` is neither a tensor nor a number.
        """
        value = self._as_tensor(tensor, "all_gather")
        if not self._launched:
            return value.unsqueeze(0)
        return _collectives.all_gather(value, group, sync_grads)

    def _as_tensor(self, value: Any, method: str) -> torch.Tensor:
        # Before launch there is no XLA device yet (and one process): numbers stay on the CPU.
        converted = as_tensor(value, self.root_device if self._launched else None)
        if not isinstance(converted, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}.{method}() communicates tensors and numbers, got {type(value).__name__}. "
                "Use fabric.all_reduce(...) or fabric.all_gather(...) for nested collections, or fabric.broadcast(...) "
                "for other objects."
            )
        return converted

    def broadcast(self, tensor: _T, src: int = 0) -> _T:
        """Send ``tensor`` (a tensor, or any picklable object) from process ``src`` to every process."""
        if not self._launched:
            return tensor
        return _collectives.broadcast(tensor, src, self.global_rank)

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point (an XLA rendezvous)."""
        if self._launched:
            _collectives.barrier(name)

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """True when every process (``all=True``) or any process (``all=False``) decided true."""
        if not self._launched:
            return decision
        votes = self.reduce(torch.tensor(int(decision)), reduce_op="sum")
        return bool(votes == self.world_size) if all else bool(votes > 0)

    # -- checkpoints --------------------------------------------------------------------

    def __repr__(self) -> str:
        launcher = self._launcher
        start = launcher.start_method if isinstance(launcher, XLALauncher) else None
        return f"{type(self).__name__}(start_method={start!r}, precision={self._precision!r})"
