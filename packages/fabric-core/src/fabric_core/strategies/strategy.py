"""The strategy interface: how a model is placed, trained, synchronised and saved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core._registries import PRECISION_REGISTRY
from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.io.checkpoint_io import CheckpointIO, TorchCheckpointIO
from fabric_core.launchers.launcher import Launcher
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.utilities.apply_func import as_tensor, move_to_device
from fabric_core.utilities.checkpoint import (
    apply_checkpoint,
    collect_state,
    module_mismatch,
    write_on_rank_zero,
)
from fabric_core.utilities.init import SkipParameterInit

__all__ = ["Strategy"]

if TYPE_CHECKING:
    from fabric_core.utilities.memory_layout import MemoryEstimate

_T = TypeVar("_T")


class Strategy:
    """How a training loop runs across devices and processes.

    A strategy owns the parts of a run: the `Accelerator` (device type), the
    `Precision` plugin, the `CheckpointIO`, and for multi-process
    strategies the cluster environment and the launcher. ``Fabric`` calls only the
    strategy; the strategy calls its parts.

    Every method has a single-process default: a subclass that overrides only
    ``setup_module`` and ``reduce`` trains on the one device the connector gives it.
    Multi-process strategies (`ParallelStrategy`) replace the collectives.

    Args:
        accelerator: The accelerator; the connector sets it when omitted.
        checkpoint_io: How checkpoints are written; `TorchCheckpointIO` by default.
        precision_plugin: The precision plugin; the connector builds one from
            ``Fabric(precision=...)`` when omitted.
        precision: Lightning Fabric's name for ``precision_plugin`` (keyword only; pass one
            of the two).
    """

    supported_accelerators: ClassVar[tuple[str, ...] | None] = None
    """Device types this strategy runs on (``None``: any)."""

    unsupported_accelerator_hint: ClassVar[str] = ""
    """What to use instead, added to the error when the run's accelerator is not supported."""

    default_accelerator: ClassVar[str | None] = None
    """The accelerator ``accelerator="auto"`` picks for this strategy (``None``: the best available)."""

    allows_repeated_setup: ClassVar[bool] = True
    """Whether the same module may be passed to ``fabric.setup`` twice (each call wraps it anew).

    Strategies that shard or take over the module in place (FSDP, DeepSpeed) set it false.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        *,
        precision: Precision | None = None,
    ) -> None:
        self._accelerator = accelerator
        self._checkpoint_io = checkpoint_io
        self._precision = pick_precision_plugin(type(self).__name__, precision_plugin, precision)
        self._device: torch.device | None = None
        self._launcher: Launcher | None = None

    # -- parts --------------------------------------------------------------------------

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator.

        Raises:
            RuntimeError: The strategy was built outside ``Fabric`` and given none.
        """
        if self._accelerator is None:
            raise RuntimeError(
                f"{type(self).__name__} has no accelerator. Pass accelerator=... or build it through Fabric."
            )
        return self._accelerator

    @accelerator.setter
    def accelerator(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator

    @property
    def given_accelerator(self) -> Accelerator | None:
        """The accelerator this instance was built with or given, ``None`` until there is one."""
        return self._accelerator

    @property
    def precision(self) -> Precision:
        """The precision plugin (float32 unless set)."""
        if self._precision is None:
            self._precision = Precision()
        return self._precision

    @precision.setter
    def precision(self, precision: Precision) -> None:
        self._precision = precision

    @property
    def checkpoint_io(self) -> CheckpointIO:
        """The checkpoint I/O (atomic ``torch.save`` files unless set)."""
        if self._checkpoint_io is None:
            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._checkpoint_io = io

    @property
    def launcher(self) -> Launcher | None:
        """How the processes of this strategy come to exist; ``None`` for one process."""
        return self._launcher

    def configure(self, config: StrategyConfig) -> None:
        """Take the settings the connector resolved, and check this strategy can honour them.

        Every strategy follows this one template: the base adopts the accelerator, the
        precision plugin and the checkpoint I/O (refusing contradictions with what the
        instance was built with) and the first device; a subclass that adds settings
        (devices, nodes, a mesh) extends it, calling ``super().configure(config)`` first.

        Raises:
            ValueError: The settings ask for something this strategy cannot do; the message
                says which ``Fabric`` argument to change.
        """
        device_type = config.accelerator.device_type
        if self.supported_accelerators is not None and device_type not in self.supported_accelerators:
            needed = " or ".join(self.supported_accelerators)
            raise ValueError(
                f"{type(self).__name__} needs {needed} devices, but this run is on accelerator='{device_type}' "
                f"(the machine has no {needed} device, or another accelerator was chosen). "
                f"{self.unsupported_accelerator_hint}".rstrip()
            )
        if self._accelerator is None:
            self._accelerator = config.accelerator
        elif config.given("accelerator") and type(self._accelerator) is not type(config.accelerator):
            raise ValueError(
                f"The strategy instance was built with {self._accelerator!r}, but Fabric(accelerator="
                f"{config.explicit['accelerator']!r}) asks for another. Pass the accelerator in one place only."  # type: ignore[index]
            )
        plugin = config.precision_plugin
        if self._precision is not None and (plugin is not None or config.given("precision")):
            raise ValueError(
                f"The strategy instance already has the precision plugin {self._precision!r}; do not also pass "
                "Fabric(precision=...) or a precision plugin in plugins=[...]."
            )
        if self._precision is None:
            self._precision = (
                plugin if plugin is not None else self.precision_for(config.precision, device_type)
            )
        if config.checkpoint_io is not None:
            if self._checkpoint_io is not None:
                raise ValueError(
                    f"The strategy instance already has {self._checkpoint_io!r}; do not also pass a CheckpointIO "
                    "in plugins=[...]."
                )
            self._checkpoint_io = config.checkpoint_io
        if self._device is None:
            self._device = config.parallel_devices[0]

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """Build the precision plugin this strategy uses for a precision string.

        Override to supply a strategy-specific plugin (DeepSpeed and FSDP cast and scale
        differently); the default looks the string up in ``PRECISION_REGISTRY``.
        """
        return PRECISION_REGISTRY.build(precision, device_type=device_type)

    # -- process and device ------------------------------------------------------------

    @property
    def root_device(self) -> torch.device:
        """The device this process computes on (the one ``Fabric`` resolved, by default).

        Raises:
            RuntimeError: The strategy was built outside ``Fabric`` and given no device.
        """
        if self._device is None:
            raise RuntimeError(
                f"{type(self).__name__} has no device yet; build it through Fabric(strategy=...)."
            )
        return self._device

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return 0

    @property
    def node_rank(self) -> int:
        """The rank of this process's node."""
        return 0

    @property
    def world_size(self) -> int:
        """The number of processes."""
        return 1

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the process of global rank 0."""
        return self.global_rank == 0

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """``num_replicas`` and ``rank`` for a ``DistributedSampler``; ``None`` when data is not sharded."""
        return None

    def setup_environment(self) -> None:
        """Prepare this process: select its device (multi-process strategies also join the group)."""
        self.accelerator.setup_device(self.root_device)

    # -- modules and optimizers ---------------------------------------------------------

    def setup_module_and_optimizers(
        self, module: nn.Module, optimizers: list[Optimizer]
    ) -> tuple[nn.Module, list[Optimizer]]:
        """Set up a module and its optimizers together (strategies that wrap both override this)."""
        module = self.setup_module(module)
        return module, [self.setup_optimizer(optimizer) for optimizer in optimizers]

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move the module to the root device and return the module to train."""
        self.module_to_device(module)
        return module

    def keep_whole_model_compile(self, compiled: nn.Module) -> bool:
        """Whether ``fabric.setup(torch.compile(model))`` compiles the set-up model as a whole.

        ``True`` by default: the user's ``torch.compile`` options are applied on top of the
        module `setup_module` returns. A strategy that compiles parts of the model
        itself (e.g. per block) returns ``False`` (and says so) to drop the whole-model one.
        """
        return True

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Return the optimizer to use (unchanged by default)."""
        return optimizer

    def module_to_device(self, module: nn.Module) -> None:
        """Move the module's parameters and buffers to the root device."""
        module.to(self.root_device)

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[Any]:
        """A context in which modules are created on the root device in the right dtype.

        Args:
            empty_init: Skip weight initialisation (the weights will be loaded anyway).
        """
        stack = ExitStack()
        stack.enter_context(SkipParameterInit() if empty_init else nullcontext())
        stack.enter_context(self.root_device)
        stack.enter_context(self.precision.module_init_context())
        return stack

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """A context in which tensors are created on the root device in the right dtype."""
        stack = ExitStack()
        stack.enter_context(self.root_device)
        stack.enter_context(self.precision.tensor_init_context())
        return stack

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        """Move every tensor in ``batch`` to ``device`` (the root device by default)."""
        return move_to_device(batch, device or self.root_device)

    def estimate_memory(self, module: nn.Module, optimizer: str) -> MemoryEstimate:
        """Per-rank bytes of ``module``'s parameters, gradients and ``optimizer`` state under this strategy.

        ``module`` is usually on the meta device; nothing is allocated or communicated. The
        default is replication in the precision plugin's parameter dtype; strategies that
        shard override it. See `fabric_core.utilities.memory.estimate_memory`.
        """
        from fabric_core.utilities.memory_layout import replicated_estimate

        return replicated_estimate(self, module, optimizer)

    # -- training step ------------------------------------------------------------------

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass through the precision plugin."""
        self.precision.backward(tensor, module, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step the optimizer through the precision plugin."""
        return self.precision.optimizer_step(optimizer, **kwargs)

    def forward_backward(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: Any,
        loss_fn: Callable[..., torch.Tensor],
        backward: Callable[[torch.Tensor], None],
    ) -> torch.Tensor:
        """The forward and backward of one batch; the loss, detached (``fabric.forward_backward``).

        Here: ``loss = loss_fn(module(*args, **kwargs), target)``, then ``backward(loss)``
        (``fabric.backward``). A pipeline strategy overrides it to run its schedule over
        micro-batches instead, so one loop serves both.
        """
        loss = loss_fn(module(*args, **kwargs), target)
        backward(loss)
        return loss.detach()

    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Scale gradients so their joint norm is at most ``max_norm``; return the norm before clipping.

        Under dynamic loss scaling (a precision plugin with a ``scaler``) gradients overflow
        now and then by design; the plugin skips that optimizer step, so a non-finite norm
        is returned instead of raising, whatever ``error_if_nonfinite`` says.
        """
        self.precision.unscale_gradients(optimizer)
        parameters = _optimizer_parameters(optimizer)
        if getattr(self.precision, "scaler", None) is not None:
            error_if_nonfinite = False
        return torch.nn.utils.clip_grad_norm_(
            parameters, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: nn.Module, optimizer: Optimizer, clip_val: float) -> None:
        """Clamp every gradient element to ``[-clip_val, clip_val]``."""
        self.precision.unscale_gradients(optimizer)
        torch.nn.utils.clip_grad_value_(_optimizer_parameters(optimizer), clip_val)

    @contextmanager
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> Iterator[None]:
        """Skip gradient synchronisation in backward passes inside the block.

        With one process there is nothing to synchronise, so this does nothing.
        """
        yield

    # -- collectives --------------------------------------------------------------------

    def reduce(
        self, tensor: torch.Tensor | Any, group: Any | None = None, reduce_op: str | None = None
    ) -> Any:
        """Reduce ``tensor`` across processes and return the result.

        Args:
            tensor: The tensor (Python numbers are turned into tensors on the root device).
            group: The process group (``None``: all processes).
            reduce_op: ``"mean"``, ``"sum"``, ``"max"``, ``"min"`` or ``"product"``;
                ``None`` is the strategy's default, ``"mean"`` for every first-party strategy.

        With one process the reduction of one value is the value itself.
        """
        return as_tensor(tensor, self.root_device)

    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """Gather ``tensor`` from every process into a new leading dimension of size ``world_size``.

        With one process the result has a leading dimension of size one.
        """
        return as_tensor(tensor, self.root_device).unsqueeze(0)

    def broadcast(self, tensor: _T, src: int = 0) -> _T:
        """Send ``tensor`` (or any picklable object) from process ``src`` to all; one process keeps it."""
        return tensor

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point (one process returns at once)."""

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """Combine a per-process decision: true if ``all`` (or, with ``all=False``, any) processes agree."""
        return decision

    # -- checkpoints --------------------------------------------------------------------

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """The state dict of a module returned by `setup_module`."""
        return module.state_dict()

    def get_optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The state dict of an optimizer returned by `setup_optimizer`."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: Optimizer, state_dict: dict[str, Any]) -> None:
        """Load a state dict made by `get_optimizer_state` into an optimizer returned by `setup_optimizer`."""
        optimizer.load_state_dict(state_dict)

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load a full state dict into a module returned by `setup_module`.

        Keys (with ``strict``) and shapes are checked first, so a state dict that does not
        fit raises `StateDictMismatchError` and
        leaves the module unchanged.
        """
        mismatch = module_mismatch(module, state_dict, strict)
        if mismatch is not None:
            raise mismatch
        module.load_state_dict(state_dict, strict=strict)

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Save ``state`` to ``path`` from global rank 0.

        Modules and optimizers in ``state`` are saved as their state dicts; any object with
        ``state_dict()`` is saved through it; everything else is saved as is.

        Args:
            path: The file to write (atomically, through the checkpoint I/O).
            state: Names mapped to modules, optimizers and plain objects.
            storage_options: Passed to the checkpoint I/O.
            filter: For a name in ``state``, a predicate ``(key, value) -> bool`` that keeps
                only some entries of that object's state dict.

        Every process must call it: when rank 0 fails to write, every process raises.
        """
        checkpoint = collect_state(state, self, filter)
        write_on_rank_zero(
            self,
            lambda: self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options),
        )

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load a checkpoint written by `save_checkpoint`, or by any other first-party strategy.

        A file is read by the checkpoint I/O plugin. A directory on the local file system
        (written by a sharded strategy: DCP, or a format a plugin registers, such as
        DeepSpeed's) is read as `fabric_core.io.interchange` describes, with full
        tensors; optimizer state keyed by parameter name is matched to the parameters
        through the model in ``state``.

        Args:
            path: The checkpoint file or directory.
            state: Objects to restore in place (by name), or one module or optimizer that
                the whole file is a state dict for. ``None`` returns the raw checkpoint.
            strict: Require every name in ``state`` to be in the checkpoint, and module
                keys to match exactly.
            weights_only: Refuse arbitrary pickled objects (default: yes).

        Returns:
            The checkpoint entries that were not restored into ``state``.
        """
        if Path(path).is_dir():
            from fabric_core.io.interchange import load_checkpoint_anywhere
            from fabric_core.io.optimizer_state import module_in_state

            return load_checkpoint_anywhere(
                path, state, strict, weights_only, module_in_state, self._load_checkpoint_file
            )
        return self._load_checkpoint_file(path, state, strict, weights_only)

    def _load_checkpoint_file(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None,
        strict: bool,
        weights_only: bool | None,
    ) -> dict[str, Any]:
        checkpoint = self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
        named = state if isinstance(state, dict) else {}

        def load_optimizer(optimizer: Optimizer, value: Any) -> None:
            from fabric_core.io.optimizer_state import is_named, module_in_state

            if not is_named(value):
                self.load_optimizer_state(optimizer, value)
                return
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            module = module_in_state(optimizer, named)
            set_optimizer_state_dict(module, optimizer, value, options=StateDictOptions(full_state_dict=True))

        return apply_checkpoint(
            state,
            checkpoint,
            strict=strict,
            path=path,
            load_module=self.load_module_state_dict,
            load_optimizer=load_optimizer,
        )

    def teardown(self) -> None:
        """Release everything the strategy acquired."""
        self.precision.teardown()
        if self._accelerator is not None:
            self._accelerator.teardown()
        self.checkpoint_io.teardown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accelerator={self._accelerator!r}, precision={self._precision!r})"


def plain_delegation(strategy: Strategy, method: str) -> bool:
    """Whether ``strategy.<method>`` (``"backward"``, ``"optimizer_step"``) only calls the tensor's or optimizer's own.

    True when neither the strategy nor its precision plugin replaces the method (on its
    class or on the instance): ``Strategy.backward`` then calls ``Precision.backward``, which
    calls ``tensor.backward``, and likewise for ``optimizer.step``. ``fabric.backward`` and a
    set-up optimizer's ``step`` then call the tensor or the optimizer directly: the two
    frames of delegation are a good part of fabric's cost per step on a small model.
    """
    precision = strategy.precision
    return (
        getattr(type(strategy), method) is getattr(Strategy, method)
        and getattr(type(precision), method) is getattr(Precision, method)
        and method not in vars(strategy)
        and method not in vars(precision)
    )


def pick_precision_plugin(
    owner: str, precision_plugin: Precision | None, precision: Precision | None
) -> Precision | None:
    """The precision plugin given as ``precision_plugin=`` (the seed's name) or ``precision=`` (Lightning's).

    Raises:
        ValueError: Both were given.
        TypeError: The value is not a `Precision`.
    """
    if precision_plugin is not None and precision is not None:
        raise ValueError(
            f"{owner} got both precision_plugin={precision_plugin!r} and precision={precision!r}; they are the "
            "same argument under two names. Pass one."
        )
    plugin = precision_plugin if precision_plugin is not None else precision
    if plugin is not None and not isinstance(plugin, Precision):
        raise TypeError(
            f"{owner}(precision_plugin={plugin!r}) needs a Precision plugin object. For a precision string such "
            "as 'bf16-mixed', pass Fabric(precision='bf16-mixed') instead."
        )
    return plugin


def _optimizer_parameters(optimizer: Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]
