"""DeepSpeed ZeRO: optimizer states, gradients and parameters partitioned across processes."""

from __future__ import annotations

import argparse
import atexit
import copy
import gc
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io import diagnose
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.io.formats import CheckpointFormat, DCPFormat
from fabric_core.io.interchange import load_checkpoint_anywhere
from fabric_core.io.manifest import write_manifest
from fabric_core.io.optimizer_state import module_in_state
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.parallel import ParallelStrategy
from fabric_core.strategies.strategy import pick_precision_plugin
from fabric_core.utilities.checkpoint import apply_checkpoint, collect_state, write_on_rank_zero
from fabric_core.utilities.init import SkipParameterInit
from fabric_core.utilities.rank_zero import warn_once
from fabric_deepspeed._arguments import check_arguments, given_arguments
from fabric_deepspeed._clipping import check_norm_type, clamp_gradients, clip_now, total_grad_norm
from fabric_deepspeed._config import (
    DeepSpeedConfigError,
    build_config,
    load_user_config,
    precision_from_config,
    zero_stage,
)
from fabric_deepspeed._engine_checkpoint import (
    load_engine_checkpoint,
    save_engine_checkpoint,
    saved_layout,
    split_state,
)
from fabric_deepspeed._interchange import load_full_optimizer_state, set_full
from fabric_deepspeed._optimizer import EngineOptimizer, engine_optimizer
from fabric_deepspeed._runtime import import_deepspeed
from fabric_deepspeed.checkpoint import DeepSpeedCheckpointFormat
from fabric_deepspeed.precision import DeepSpeedPrecision

if TYPE_CHECKING:
    from fabric_core.utilities.memory_layout import MemoryEstimate

__all__ = ["DeepSpeedStrategy"]

_REMOTE_DEVICES: Final = (None, "cpu", "nvme")


class DeepSpeedStrategy(ParallelStrategy):
    """Data-parallel training with DeepSpeed's ZeRO, which partitions the training state across processes.

    Every process runs the whole model on its shard of the data. What ZeRO partitions
    grows with the stage:

    - **stage 1**: the optimizer states (and float32 master weights). After backward the
      gradients are all-reduced; each process updates its partition and the updated
      weights are all-gathered.
    - **stage 2** (default): also the gradients, reduce-scattered during backward so each
      process keeps only the gradients of its partition.
    - **stage 3**: also the parameters. Each module's parameters are all-gathered just
      before its forward and backward and released afterwards; memory per process is
      about a ``1/world_size`` share of the model. Create big models under
      ``fabric.init_module()`` so they are partitioned while they are built
      (``deepspeed.zero.Init``).

    Offloading moves the optimizer states (stages 1-3) and the parameters (stage 3) to the
    CPU or to NVMe, where the optimizer step then runs.

    **The config.** One DeepSpeed config is built from the arguments, ``Fabric(precision=...)``
    and the optional ``config``. An argument that differs from its documented default and a
    ``config`` value that disagree raise an error naming both; an argument left at its
    default (whether passed or not) leaves the ``config`` in charge. fabric's defaults differ
    from DeepSpeed's in two places: no gradient clipping (``gradient_clipping: 0.0``, as in a
    plain loop; ``fabric.clip_gradients`` clips a step, the config clips every step) and any
    torch optimizer is allowed (``zero_allow_untested_optimizer``).
    ``train_micro_batch_size_per_gpu`` is set to 1 when the config names no batch size
    (DeepSpeed requires one; the loop feeds the batches). See `config`.

    **The loop stays the same.** ``fabric.setup(model, optimizer)`` returns the DeepSpeed
    engine (as the model) and a ``torch.optim.Optimizer`` whose ``param_groups`` are those
    DeepSpeed steps with, so an LR scheduler built on it (or on the optimizer before
    ``setup``) sets the learning rate of every ``engine.step()``. ``fabric.backward(loss)``
    runs ``engine.backward(loss)``, ``optimizer.step()`` runs ``engine.step()``.

    - ``fabric.clip_gradients(model, optimizer, max_norm=...)`` returns the L2 norm of the
      reduced gradients and has DeepSpeed clip the next ``engine.step()`` at ``max_norm``;
      ``clip_val=...`` clamps the reduced gradients (one collective per parameter).
    - ``fabric.no_backward_sync(model)`` skips the gradient reduction under stages 0 and 1
      (``engine.no_sync()``). Stages 2 and 3 reduce-scatter gradients in every backward
      pass and cannot skip it: they synchronise every micro-batch (the accumulated
      gradient is still the sum) and say so once.

    **On the CPU** DeepSpeed runs with its CPU accelerator over gloo. The strategy exports
    ``DS_ACCELERATOR=cpu`` before importing deepspeed unless the variable is set, and keeps
    deepspeed from compiling its shared-memory comm op, which training does not use. Use
    torch optimizers (``torch.optim.Adam``, ...) to avoid compiling DeepSpeed's CPU Adam.

    Args:
        stage: The ZeRO stage, 0 to 3 (default 2; 0 is plain data parallelism).
        remote_device: Where ``fabric.init_module()`` puts the parameters of a stage-3
            model while building it: ``"cpu"``, ``"nvme"``, or ``None`` (the device, or the
            parameter offload device).
        offload_optimizer: Keep optimizer states and master weights on
            ``offload_optimizer_device`` and step there (default off).
        offload_parameters: Keep parameters on ``offload_params_device`` between uses
            (stage 3; default off).
        offload_params_device: ``"cpu"`` (default) or ``"nvme"``.
        nvme_path: The directory NVMe offload writes to (``None``: ``/local_nvme``).
        params_buffer_count: Buffers for parameters swapped in from NVMe (default 5).
        params_buffer_size: Size in elements of each of those buffers (default 1e8).
        max_in_cpu: Parameter elements kept in CPU memory under NVMe offload (default 1e9).
        offload_optimizer_device: ``"cpu"`` (default) or ``"nvme"``.
        optimizer_buffer_count: Buffers for optimizer states swapped in from NVMe (default 4).
        block_size: NVMe I/O block size in bytes (default 1048576).
        queue_depth: NVMe I/O queue depth (default 8).
        single_submit: Submit NVMe requests one by one instead of in batches (default off).
        overlap_events: Overlap NVMe submission and completion (default on).
        thread_count: NVMe I/O threads (default 1).
        config: A DeepSpeed config as a dict or the path of a JSON file.
        logging_level: The level of deepspeed's logger (default ``logging.WARN``).
        parallel_devices: One device per process on this node; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from; detected when omitted.
        checkpoint_io: Reads single-file checkpoints (``fabric.load_raw``, consolidated
            files); DeepSpeed writes its checkpoint directories itself.
        precision_plugin: A `DeepSpeedPrecision`; built from
            ``Fabric(precision=...)`` when omitted.
        process_group_backend: ``"gloo"`` (CPU default), ``"nccl"`` (CUDA default), ...
        timeout: How long collectives wait for the other processes (``None``: 5 minutes on
            gloo, so a skipped collective surfaces quickly; torch's default otherwise).
        accelerator: Keyword only. The accelerator (CPU or CUDA); set by ``Fabric`` when omitted.
        precision: Keyword only. Lightning Fabric's name for ``precision_plugin``.
        **kwargs: Further DeepSpeed settings by name, e.g. ``overlap_comm=False``,
            ``reduce_bucket_size=5e7``, ``pin_memory=True``, ``gradient_clipping=1.0``,
            ``loss_scale_window=500``; the full list is
            ``fabric_deepspeed._arguments.EXTRA_SETTINGS`` plus ``pin_memory``. Anything else
            goes in ``config``.

    The arguments from ``stage`` to ``timeout`` are the seed's, in its order, with its
    defaults. Each default is what runs when nothing is said (DeepSpeed's own value, and
    fabric's stage 2), so passing one explicitly changes nothing.

    Raises:
        TypeError: An unknown keyword argument.
        ValueError: An invalid value, a non-default argument that has no effect (an
            offload detail while nothing is offloaded there), or an argument that
            contradicts ``config``.

    Example::

        fabric = Fabric(accelerator="cuda", devices=8, strategy=DeepSpeedStrategy(stage=3), precision="bf16-mixed")
    """

    supported_accelerators = ("cpu", "cuda")
    allows_repeated_setup: ClassVar[bool] = False
    """DeepSpeed takes the module over (and partitions it under stage 3): set a model up once."""

    _precision: Precision | None

    def __init__(
        self,
        stage: int = 2,
        remote_device: str | None = None,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        offload_params_device: str = "cpu",
        nvme_path: str | os.PathLike[str] | None = None,
        params_buffer_count: int = 5,
        params_buffer_size: int = 100_000_000,
        max_in_cpu: int = 1_000_000_000,
        offload_optimizer_device: str = "cpu",
        optimizer_buffer_count: int = 4,
        block_size: int = 1048576,
        queue_depth: int = 8,
        single_submit: bool = False,
        overlap_events: bool = True,
        thread_count: int = 1,
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        logging_level: int = logging.WARN,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        *,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        **kwargs: Any,
    ) -> None:
        plugin = pick_precision_plugin("DeepSpeedStrategy", precision_plugin, precision)
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            checkpoint_io=checkpoint_io,
            precision_plugin=plugin,
            cluster_environment=cluster_environment,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method="popen",
        )
        if plugin is not None and not isinstance(plugin, DeepSpeedPrecision):
            raise TypeError(
                f"DeepSpeedStrategy(precision_plugin=...) takes a DeepSpeedPrecision, got {plugin!r}. "
                "Pass Fabric(precision='bf16-mixed') (or another precision string) instead."
            )
        if remote_device not in _REMOTE_DEVICES:
            raise ValueError(
                f"DeepSpeedStrategy(remote_device={remote_device!r}) must be None, 'cpu' or 'nvme'."
            )
        self._arguments = given_arguments(
            {
                "stage": stage,
                "offload_optimizer": offload_optimizer,
                "offload_parameters": offload_parameters,
                "offload_params_device": offload_params_device,
                "nvme_path": nvme_path,
                "params_buffer_count": params_buffer_count,
                "params_buffer_size": params_buffer_size,
                "max_in_cpu": max_in_cpu,
                "offload_optimizer_device": offload_optimizer_device,
                "optimizer_buffer_count": optimizer_buffer_count,
                "block_size": block_size,
                "queue_depth": queue_depth,
                "single_submit": single_submit,
                "overlap_events": overlap_events,
                "thread_count": thread_count,
            },
            kwargs,
        )
        check_arguments(self._arguments)
        self._remote_device = remote_device
        self._logging_level = logging_level
        self._user_config = load_user_config(config)
        self._precision_source = (
            f"DeepSpeedStrategy(precision_plugin={plugin!r})" if plugin is not None else None
        )
        self._configured = False
        self._engines: list[Any] = []
        self._optimizers: list[EngineOptimizer] = []
        # Each engine's parameter names per group of the optimizer given to fabric.setup, in its
        # order, keyed by id(engine): self._engines keeps the engines alive, and a plain dict
        # keeps the strategy picklable for spawned processes.
        self._group_names: dict[int, list[list[str]]] = {}
        self._deepspeed: ModuleType | None = None
        self._config: dict[str, Any] = {}
        self._build_config()

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """A `DeepSpeedPrecision` for ``Fabric(precision=...)``.

        Raises:
            ValueError: ``64-true``, or float16 on the CPU.
        """
        return DeepSpeedPrecision(precision, device_type)

    def configure(self, config: StrategyConfig) -> None:
        """Adopt Fabric's settings and build the final DeepSpeed config with the run's precision.

        When ``Fabric(precision=...)`` is not given, a ``config`` that enables ``bf16`` or
        ``fp16`` chooses the precision.

        Raises:
            ValueError: A precision plugin that is not a ``DeepSpeedPrecision``, or a
                precision the ``config`` contradicts.
        """
        super().configure(config)
        if not isinstance(self.precision, DeepSpeedPrecision):
            raise ValueError(
                f"DeepSpeed casts and scales through its own precision plugin, but Fabric(plugins=[...]) passed "
                f"{self.precision!r}. Pass Fabric(precision='bf16-mixed') (or another precision string) instead."
            )
        if self._precision_source is None:
            if config.precision_plugin is not None:
                self._precision_source = f"Fabric(plugins=[{config.precision_plugin!r}])"
            elif config.given("precision"):
                given = (config.explicit or {})["precision"]
                self._precision_source = f"Fabric(precision={given!r})"
        self._configured = True
        self._build_config()

    def configure_deepspeed_config(
        self, config: Mapping[str, Any] | str | os.PathLike[str]
    ) -> dict[str, Any]:
        """Replace the user config (a dict or a JSON path) given as ``DeepSpeedStrategy(config=...)``.

        The new config is checked against the arguments and the precision like the first one.

        Returns:
            A copy of the completed config the engines will be built with (`config`):
            the user config with the arguments' settings and fabric's defaults filled in.

        Raises:
            RuntimeError: A model was set up already; its engine keeps the config it was built with.
            ValueError: The new config contradicts an argument or the precision.
        """
        if self._engines:
            raise RuntimeError(
                "The DeepSpeed config cannot change once a model is set up. Call configure_deepspeed_config() "
                "before fabric.setup()."
            )
        previous = self._user_config
        self._user_config = load_user_config(config)
        try:
            self._build_config()
        except BaseException:
            self._user_config = previous
            raise
        return copy.deepcopy(self._config)

    def _build_config(self) -> None:
        precision = (
            self._precision.precision if isinstance(self._precision, DeepSpeedPrecision) else "32-true"
        )
        self._config = build_config(
            self._arguments, self._user_config, precision, self._precision_source, final=self._configured
        )
        if self._configured and self._precision_source is None:
            wanted = precision_from_config(self._config) or "32-true"
            if wanted != self.precision.precision:
                try:
                    self._precision = DeepSpeedPrecision(wanted, self.accelerator.device_type)
                except ValueError as error:
                    raise DeepSpeedConfigError(f"The DeepSpeed config asks for {wanted}: {error}") from None
        if self._remote_device is not None and self.zero_stage != 3:
            raise ValueError(
                f"DeepSpeedStrategy(remote_device={self._remote_device!r}) places parameters built under "
                f"fabric.init_module(), which only ZeRO stage 3 partitions; the stage is {self.zero_stage}."
            )

    @property
    def config(self) -> dict[str, Any]:
        """The DeepSpeed config engines are built with (final once ``Fabric`` has configured the strategy)."""
        return self._config

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage of the config."""
        return zero_stage(self._config)

    def estimate_memory(self, module: nn.Module, optimizer: str) -> MemoryEstimate:
        """Per-rank bytes of parameters, gradients and optimizer state under this ZeRO stage.

        See `fabric_deepspeed._estimate` for DeepSpeed's accounting.
        """
        from fabric_deepspeed._estimate import estimate_zero

        return estimate_zero(self, module, optimizer)

    # -- process ------------------------------------------------------------------------

    def setup_environment(self) -> None:
        """Join the process group, import deepspeed for this device and start its comm backend on the group."""
        super().setup_environment()
        # DeepSpeed reads this process's device index from LOCAL_RANK, which not every launcher sets.
        os.environ.setdefault("LOCAL_RANK", str(self.local_rank))
        deepspeed = self._import_deepspeed()
        deepspeed.init_distributed(
            dist_backend=self.process_group_backend, dist_init_required=False, verbose=False
        )

    def _import_deepspeed(self) -> ModuleType:
        if self._deepspeed is None:
            self._deepspeed = import_deepspeed(self.root_device.type, self._logging_level)
        return self._deepspeed

    # -- modules and optimizers ---------------------------------------------------------

    def setup_module_and_optimizers(
        self, module: nn.Module, optimizers: list[Optimizer]
    ) -> tuple[nn.Module, list[Optimizer]]:
        """Build the DeepSpeed engine of ``module`` and its one optimizer, and return both.

        The optimizer returned is a ``torch.optim.Optimizer`` (of the given optimizer's class
        too) whose ``param_groups`` are the given optimizer's: the groups DeepSpeed steps
        with, so an LR scheduler of either object sets the learning rate of each step. Its
        ``step()`` is ``engine.step()`` and its ``state_dict()`` the DeepSpeed optimizer's
        (partitioned under ZeRO).

        Raises:
            ValueError: Not exactly one optimizer was given.
        """
        if len(optimizers) != 1:
            raise ValueError(
                f"A DeepSpeed engine trains a model with one optimizer, but fabric.setup() got {len(optimizers)}. "
                "Put all parameter groups into one optimizer."
            )
        engine = self._initialize_engine(module, optimizers[0])
        view = engine_optimizer(engine)
        self._optimizers.append(view)
        return engine, [view]

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Build a DeepSpeed engine without an optimizer (for evaluation, or an optimizer from the config)."""
        return self._initialize_engine(module, None)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Refused: DeepSpeed builds the model's engine and its optimizer together.

        Raises:
            NotImplementedError: Always; use ``fabric.setup(model, optimizer)``.
        """
        raise NotImplementedError(
            "DeepSpeed sets up a model and its optimizer together. Call fabric.setup(model, optimizer) instead of "
            "fabric.setup_module() followed by fabric.setup_optimizers()."
        )

    def _initialize_engine(self, module: nn.Module, optimizer: Optimizer | None) -> Any:
        deepspeed = self._import_deepspeed()
        names = {id(parameter): name for name, parameter in module.named_parameters()}
        # DeepSpeed replaces the groups' parameters by its flat partitions: what a full optimizer state maps to.
        group_names = [
            [names.get(id(parameter), "") for parameter in group["params"]]
            for group in (optimizer.param_groups if optimizer is not None else [])
        ]
        index = self.root_device.index
        engine, _, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=index if index is not None else self.local_rank),
            config=copy.deepcopy(self._config),
            model=module,
            model_parameters=[p for p in module.parameters() if p.requires_grad],
            optimizer=optimizer,
            dist_init_required=False,
        )
        if not self._engines:
            # Runs before the process group's own exit handler (registered earlier): DeepSpeed's
            # buffers and pending collective handles are freed while the interpreter is whole.
            atexit.register(self._release_engines)
        self._engines.append(engine)
        self._group_names[id(engine)] = group_names
        return engine

    def module_to_device(self, module: nn.Module) -> None:
        """Move the module to the device, except under stage 3, where DeepSpeed places the partitions."""
        if self.zero_stage != 3:
            super().module_to_device(module)

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[Any]:
        """Under stage 3, build modules inside ``deepspeed.zero.Init``: each parameter is partitioned as soon as it exists.

        Parameters go to ``remote_device`` when given. Other stages create the module on the
        device, as every strategy does.

        Args:
            empty_init: Skip weight initialisation (the weights will be loaded anyway).
        """
        if self.zero_stage != 3:
            return super().module_init_context(empty_init)
        deepspeed = self._import_deepspeed()
        stack = ExitStack()
        if empty_init:
            stack.enter_context(SkipParameterInit())
        stack.enter_context(self.precision.module_init_context())
        stack.enter_context(
            deepspeed.zero.Init(
                remote_device=self._remote_device, config_dict_or_path=copy.deepcopy(self._config)
            )
        )
        return stack

    # -- training step ------------------------------------------------------------------

    def backward(self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any) -> None:
        """Run ``engine.backward(loss)``: it scales the loss and reduces (or reduce-scatters) the gradients.

        Raises:
            ValueError: Several models are set up and ``fabric.backward(loss, model=...)`` names none.
        """
        self._engine_for_backward(module).backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Run ``engine.step()`` for the engine of ``optimizer``: the (partitioned) update and gradient reset.

        A clip asked for with ``fabric.clip_gradients(max_norm=...)`` applies to this step.

        Raises:
            TypeError: A closure was passed; DeepSpeed steps without one.
            RuntimeError: ``optimizer`` was not set up by this strategy.
        """
        if kwargs:
            raise TypeError(
                "DeepSpeed's engine steps without a closure; call optimizer.step() with no arguments."
            )
        self._optimizer_view(optimizer, "optimizer.step()").step()

    # Same parameters as Strategy.clip_gradients_norm (the contract every strategy keeps); only the body is its own.
    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Have DeepSpeed clip the next ``optimizer.step()`` at ``max_norm``; return the norm before clipping.

        The norm is the L2 norm of the reduced (and, under ZeRO, partitioned) gradients,
        computed now with DeepSpeed's own routine: the number its step clips with. For the
        stage-0 bf16/fp16 wrappers, which compute it only inside the step, the returned
        tensor is NaN until ``optimizer.step()`` fills it in place (said once). Under
        float16 a non-finite norm is DeepSpeed's loss-scale overflow: the step is skipped
        and nothing is raised. Every process must call it (the norm is all-reduced).

        Raises:
            ValueError: ``norm_type`` is not 2 (DeepSpeed clips by the L2 norm only).
            RuntimeError: The norm is nan or inf and ``error_if_nonfinite`` is true.
        """
        check_norm_type(norm_type)
        view = self._optimizer_view(optimizer, "fabric.clip_gradients()")
        engine = view.engine
        if getattr(engine.optimizer, "compute_grad_norm", True) is False:
            raise ValueError(
                "fabric.clip_gradients(max_norm=...) needs the gradient norm, but the DeepSpeed config sets "
                "zero_optimization.compute_grad_norm = false. Remove that setting to clip."
            )
        norm = total_grad_norm(engine)
        if norm is None:
            warn_once(
                f"DeepSpeed's {type(engine.optimizer).__name__} computes the gradient norm only inside "
                "optimizer.step(): the tensor fabric.clip_gradients() returns is NaN until the step fills it in.",
                stacklevel=4,  # the user's fabric.clip_gradients() line
            )
            pending = torch.full((), torch.nan, device=engine.device)
            view.clip_norm_at_next_step(max_norm, norm=pending)
            return pending
        if not torch.isfinite(norm) and error_if_nonfinite and not engine.fp16_enabled():
            raise RuntimeError(
                f"The total norm of the gradients is {norm.item()}, so they cannot be clipped. Look for a nan or "
                "inf in the loss or the inputs, or pass fabric.clip_gradients(..., error_if_nonfinite=False) to go on."
            )
        if not clip_now(engine, max_norm, norm):
            view.clip_norm_at_next_step(max_norm)
        return norm

    def clip_gradients_value(self, module: nn.Module, optimizer: Optimizer, clip_val: float) -> None:
        """Clamp every element of the reduced gradients to ``[-clip_val, clip_val]``.

        DeepSpeed has no value clipping; the reduced, partitioned gradients are read and
        written back through ``deepspeed.utils.safe_get_full_grad`` / ``safe_set_full_grad``,
        which costs one collective per parameter. Every process must call it.

        Raises:
            RuntimeError: ``optimizer`` was not set up by this strategy.
        """
        clamp_gradients(self._optimizer_view(optimizer, "fabric.clip_gradients()").engine, clip_val)

    @contextmanager
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> Iterator[None]:
        """Accumulate the gradients of the backward passes inside the block, skipping their reduction where ZeRO can.

        Inside the block the engine is told that the accumulation has not ended
        (``engine.set_gradient_accumulation_boundary(False)``), so DeepSpeed keeps adding the
        micro-batches' gradients up until the backward pass after the block, which ends the
        accumulation. Stages 0 and 1 reduce only then (the block also runs under
        ``engine.no_sync()``). Stages 2 and 3 reduce-scatter the gradients during every
        backward pass (that is how they partition them): the communication cannot be
        skipped, the accumulated gradient is the same, and a warning says so once.

        Raises:
            TypeError: ``module`` is not a model set up by this strategy.
        """
        if not enabled:
            yield
            return
        engine = self._engine_of(module)
        if engine is None:
            raise TypeError("no_backward_sync needs the model set up by this DeepSpeed strategy.")
        if self.zero_stage >= 2:
            warn_once(
                f"fabric.no_backward_sync() cannot skip the gradient synchronisation under DeepSpeed ZeRO stage "
                f"{self.zero_stage}, which reduce-scatters the gradients in every backward pass to partition them. "
                "Every micro-batch is synchronised instead: the accumulated gradients are the same, only the "
                "communication is not saved.",
                stacklevel=4,  # the user's `with` line (through contextlib's __enter__)
            )
        # The engine's own override (None: DeepSpeed counts gradient_accumulation_steps).
        previous = getattr(engine, "_is_gradient_accumulation_boundary", None)
        engine.set_gradient_accumulation_boundary(False)
        try:
            with engine.no_sync() if self.zero_stage < 2 else nullcontext():
                yield
        finally:
            engine.set_gradient_accumulation_boundary(previous)

    # -- checkpoints --------------------------------------------------------------------

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """The state dict of the engine's module (this process's partitions under stage 3)."""
        engine = self._engine_of(module)
        return (engine.module if engine is not None else module).state_dict()

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load a full state dict into a set-up model, and into the optimizer's master weights.

        Under stage 3 the parameters are gathered for the load and partitioned again. When
        the engine trains in bf16 or fp16, the float32 master weights are set from the state
        dict's values (``deepspeed.utils.safe_set_full_fp32_param``), not from their rounded
        copies in the model.
        """
        engine = self._engine_of(module)
        if engine is None:
            super().load_module_state_dict(module, state_dict, strict=strict)
            return
        if self.zero_stage == 3:
            deepspeed = self._import_deepspeed()
            # Gathered, the parameters have their full shapes, which the base class checks.
            with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=0):
                super().load_module_state_dict(engine.module, state_dict, strict=strict)
        else:
            super().load_module_state_dict(engine.module, state_dict, strict=strict)
        refresh = getattr(engine.optimizer, "refresh_fp32_params", None)
        if callable(refresh):
            refresh()
        if callable(refresh) and (engine.bfloat16_enabled() or engine.fp16_enabled()):
            for name, parameter in engine.module.named_parameters():
                value = state_dict.get(name)
                if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
                    set_full(engine.optimizer, parameter, value.to(engine.device, torch.float32))

    def load_optimizer_state(self, optimizer: Optimizer, state_dict: dict[str, Any]) -> None:
        """Load a full optimizer state dict (index- or name-keyed) into an optimizer that ``fabric.setup`` returned.

        This is what a single-file checkpoint (from a single device, DDP, FSDP's full state
        dict, or a consolidated one) holds. The per-parameter states (Adam's moments, ...)
        are partitioned into this process's share (``deepspeed.utils.safe_set_full_optimizer_state``),
        the step count and each group's hyperparameters (``lr``, ...) are set. An
        index-keyed state maps to the parameters in the order of the optimizer given to
        ``fabric.setup``. Every process must call it with the same state.

        Raises:
            ValueError: The state's parameter groups do not match the optimizer's.
        """
        view = self._view_or_none(optimizer)
        if view is None:
            super().load_optimizer_state(optimizer, state_dict)
            return
        load_full_optimizer_state(view.engine, state_dict, self._group_names.get(id(view.engine), []))

    # Same parameters as Strategy.save_checkpoint (the contract every strategy keeps); only the body is its own.
    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Write a DeepSpeed checkpoint directory at ``path`` (every process writes its partitions).

        The model and its optimizer go through ``engine.save_checkpoint``; the other entries
        of ``state`` travel in its client state. Rank 0's ``path`` is used by all processes,
        and rank 0 adds the manifest (``fabric-manifest.json``: format, strategy, world size,
        versions) once the engine has written its files.

        Raises:
            TypeError: ``storage_options`` or ``filter`` was given.
            ValueError: ``state`` holds no set-up DeepSpeed model, or several.
        """
        if storage_options is not None:
            raise TypeError(
                "DeepSpeed writes its checkpoint directories itself and takes no storage_options."
            )
        if filter is not None:
            raise TypeError(
                "DeepSpeed saves the whole engine state, so fabric.save(..., filter=...) is not supported. Save "
                "the entries you want to filter in a separate file."
            )
        split = split_state(state, self._optimizer_aliases())
        directory = self.broadcast(str(path))
        save_engine_checkpoint(split, directory, collect_state(split.rest, self))
        write_on_rank_zero(self, lambda: write_manifest(directory, self, "deepspeed"))

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Restore a checkpoint written by any first-party strategy into ``state``.

        A DeepSpeed directory written by `save_checkpoint` with this number of
        processes and ZeRO stage is read by the engine: the model, its optimizer (if
        ``state`` names it) and the other entries, exactly. A single file (from a single
        device, DDP, FSDP's full state dict, a consolidated checkpoint) loads full weights
        into the model through `load_module_state_dict` and a full optimizer state,
        index- or name-keyed, through `load_optimizer_state`: Adam's moments, the step
        and the learning rates carry over. A directory of another layout (a DeepSpeed one of
        another world size or stage, a ``torch.distributed.checkpoint`` one from FSDP or
        model parallel, another registered format) is consolidated into a temporary file on
        each process first, then loaded like one.

        Returns:
            The saved entries that ``state`` did not ask for.

        Raises:
            ValueError: ``state`` holds no set-up DeepSpeed model (for a DeepSpeed
                directory), or the optimizer state does not fit the optimizer.
            FileNotFoundError: Nothing at ``path``.
            IsADirectoryError: ``path`` is a directory of no known checkpoint format.
        """
        path = Path(self.broadcast(str(path)))
        if path.is_file() or isinstance(state, (nn.Module, Optimizer)):
            return self._load_file(path, state, strict, weights_only)
        if not path.is_dir():
            raise diagnose.missing_checkpoint(path)
        if DCPFormat.detect(path) and not DeepSpeedCheckpointFormat.detect(path):
            return self._load_consolidated(DCPFormat(), path, state, strict, weights_only)
        if not DeepSpeedCheckpointFormat.detect(path):
            return load_checkpoint_anywhere(
                path, state, strict, weights_only, module_in_state, self._load_file
            )
        if not isinstance(state, dict):
            raise ValueError(
                "A DeepSpeed checkpoint directory is restored into objects: pass fabric.load(path, {'model': model, "
                "'optimizer': optimizer, ...})."
            )
        split = split_state(state, self._optimizer_aliases())
        if saved_layout(path) != (self.world_size, self.zero_stage):  # the engine reads its own layout only
            return self._load_consolidated(DeepSpeedCheckpointFormat(), path, state, strict, weights_only)
        entries = load_engine_checkpoint(split, path, strict)
        remainder = apply_checkpoint(split.rest, entries, self, strict, path=path)
        state.update(split.rest)
        return remainder

    def _load_file(
        self,
        path: Path,
        state: dict[str, Any] | nn.Module | Optimizer | None,
        strict: bool,
        weights_only: bool | None,
        shown: Path | None = None,
    ) -> dict[str, Any]:
        """Load the single file ``path`` into ``state`` (named ``shown`` in errors, when it stands for a directory)."""
        checkpoint = self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
        return apply_checkpoint(state, checkpoint, self, strict, path=shown or path)

    def _load_consolidated(
        self,
        checkpoint_format: CheckpointFormat,
        path: Path,
        state: dict[str, Any] | None,
        strict: bool,
        weights_only: bool | None,
    ) -> dict[str, Any]:
        """Consolidate the directory ``path`` into a temporary file on this process, then load that into ``state``."""
        with tempfile.TemporaryDirectory(prefix="fabric-consolidate-") as scratch:
            single = Path(scratch) / "consolidated.pt"
            checkpoint_format.consolidate(path, single)
            return self._load_file(single, state, strict, weights_only, shown=path)

    # -- helpers ------------------------------------------------------------------------

    def _optimizer_aliases(self) -> list[tuple[Any, tuple[Any, ...]]]:
        """Each engine with the objects that stand for its optimizer in a checkpoint's state."""
        aliases = []
        for engine in self._engines:
            views = tuple(view for view in self._optimizers if view.engine is engine)
            others = (engine.optimizer, engine.basic_optimizer)
            aliases.append((engine, views + tuple(o for o in others if o is not None)))
        return aliases

    def _view_or_none(self, optimizer: Any) -> EngineOptimizer | None:
        for view in self._optimizers:
            if optimizer is view or optimizer is view.client_optimizer or optimizer is view.optimizer:
                return view
        return None

    def _optimizer_view(self, optimizer: Any, caller: str) -> EngineOptimizer:
        view = self._view_or_none(optimizer)
        if view is not None:
            return view
        raise RuntimeError(
            f"{caller} got an optimizer that was not set up by this DeepSpeed strategy; use the one that "
            "fabric.setup(model, optimizer) returned."
        )

    def _engine_of(self, module: Any) -> Any:
        return next((engine for engine in self._engines if engine is module), None)

    def _engine_for_backward(self, module: nn.Module | None) -> Any:
        if module is not None:
            engine = self._engine_of(module)
            if engine is None:
                raise ValueError(
                    "fabric.backward(model=...) got a model that was not set up by this DeepSpeed strategy."
                )
            return engine
        if len(self._engines) == 1:
            return self._engines[0]
        if not self._engines:
            raise RuntimeError(
                "fabric.backward() under DeepSpeed needs a model set up with fabric.setup(model, optimizer)."
            )
        raise ValueError(
            f"{len(self._engines)} DeepSpeed models are set up; say which one the loss came from: "
            "fabric.backward(loss, model=model)."
        )

    def teardown(self) -> None:
        """Release the engines (their hooks and buffers), then the process group and the other parts.

        The group this strategy formed is destroyed through ``deepspeed.comm``, which also
        forgets the subgroups DeepSpeed cached on it, so a later DeepSpeed strategy in the
        same process forms its own instead of reusing dead ones.
        """
        atexit.unregister(self._release_engines)
        self._release_engines()
        if self._deepspeed is not None and self._owns_process_group and torch.distributed.is_initialized():
            self._deepspeed.comm.destroy_process_group()
        super().teardown()

    def _release_engines(self) -> None:
        for engine in self._engines:
            destroy = getattr(engine, "destroy", None)
            if callable(destroy):
                destroy()
        self._engines.clear()
        self._optimizers.clear()
        self._group_names.clear()
        gc.collect()

    def __repr__(self) -> str:
        return f"DeepSpeedStrategy(stage={self.zero_stage}, precision={self._precision!r})"
