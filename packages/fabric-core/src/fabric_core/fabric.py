"""The ``Fabric`` facade: the only object a training loop talks to."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.connector import apply_launcher_settings, connect
from fabric_core.strategies.strategy import Strategy, plain_delegation
from fabric_core.utilities.apply_func import apply_to_tensors, convert_to_tensors
from fabric_core.utilities.collectives import check_reduce_op
from fabric_core.utilities.data import with_distributed_sampler, with_worker_seeding
from fabric_core.utilities.rank_zero import rank_zero_only, warn_once
from fabric_core.utilities.seed import seed_everything as _seed_everything
from fabric_core.utilities.seed import seeding_workers
from fabric_core.wrappers import FabricDataLoader, FabricModule, FabricOptimizer, unwrap

__all__ = ["Fabric"]

_T = TypeVar("_T")
_Scheduler = TypeVar("_Scheduler")
_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "strategy": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "precision": None,
    "plugins": None,
}


class Fabric:
    """Runs a plain PyTorch training loop on any device, strategy and precision.

    Build it once, set up the model, optimizers and loaders, and keep the loop as it is::

        fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
        fabric.launch()
        model, optimizer = fabric.setup(model, optimizer)
        loader = fabric.setup_dataloaders(loader)
        for batch in loader:
            loss = model(batch).mean()
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    Args:
        accelerator: ``"cpu"``, ``"cuda"`` (or ``"gpu"``), ``"mps"``, a plugin's name, an
            `Accelerator`, or ``"auto"`` (the best available).
        strategy: A registered name (``"ddp"``, ``"fsdp"``, ``"deepspeed_stage_3"``, ... see
            ``fabric strategies``), a `Strategy` instance, or ``"auto"``
            (one device: ``single_device``; several: ``ddp``).
        devices: Devices per node: a count, ``-1`` for all, a list of indices, a string
            (``"2"``, ``"0,1"``), or ``"auto"``.
        num_nodes: The number of machines.
        precision: ``"32-true"`` (default), ``"64-true"``, ``"16-true"``, ``"bf16-true"``,
            ``"16-mixed"`` or ``"bf16-mixed"``.
        plugins: A precision plugin, a `CheckpointIO` and/or a
            cluster environment, to use instead of the defaults.
        callbacks: Objects whose methods `call` invokes by name.
        loggers: Objects with ``log_metrics(metrics, step)``, used by `log`: the
            ones of `fabric_core.loggers` (``CSVLogger``, ``TensorBoardLogger``) or
            your own.

    Raises:
        ValueError, TypeError, UnknownNameError: One message per bad argument, saying what
            was wrong and what to pass instead.
    """

    def __init__(
        self,
        accelerator: str | Accelerator = "auto",
        strategy: str | Strategy = "auto",
        devices: int | str | Sequence[int] = "auto",
        num_nodes: int = 1,
        precision: str | int | None = None,
        plugins: Any = None,
        callbacks: Any = None,
        loggers: Any = None,
    ) -> None:
        arguments = {
            "accelerator": accelerator,
            "strategy": strategy,
            "devices": devices,
            "num_nodes": num_nodes,
            "precision": precision,
            "plugins": plugins,
        }
        explicit = {name: value for name, value in arguments.items() if value != _DEFAULTS[name]}
        arguments = apply_launcher_settings(arguments, explicit)
        self._strategy: Strategy = connect(**arguments, explicit=explicit)
        self._callbacks = _checked_callbacks(callbacks)
        self._loggers = _checked_loggers(loggers)
        self._set_up_modules: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._backward_module: nn.Module | None = None
        self._module_count = 0
        self._backward_directly = False  # set by setup: whether backward is tensor.backward
        self._environment_ready = False
        self._launched = False

    # -- properties ---------------------------------------------------------------------

    @property
    def strategy(self) -> Strategy:
        """The strategy running this loop."""
        return self._strategy

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator of the strategy."""
        return self._strategy.accelerator

    @property
    def device(self) -> torch.device:
        """The device this process computes on."""
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes (0 for a single process)."""
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine."""
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        """The rank of this process's machine."""
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        """The number of processes in the run."""
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the process of global rank 0."""
        return self._strategy.is_global_zero

    @property
    def loggers(self) -> list[Any]:
        """The loggers passed to the constructor."""
        return list(self._loggers)

    @property
    def logger(self) -> Any:
        """The first logger.

        Raises:
            RuntimeError: No logger was given.
        """
        if not self._loggers:
            raise RuntimeError("This Fabric has no logger; pass Fabric(loggers=[...]).")
        return self._loggers[0]

    # -- launching ----------------------------------------------------------------------

    def launch(self, function: Callable[..., _T] | None = None, *args: Any, **kwargs: Any) -> _T | None:
        """Start the processes of the run and prepare this one.

        Without ``function``, every process continues the script after this call. With
        ``function``, it is called as ``function(fabric, *args, **kwargs)`` in every
        process and rank 0's return value is returned.

        Under ``fabric run``, ``torchrun``, ``srun`` and other launchers the processes exist
        already, and ``launch()`` joins them: the same script runs unchanged everywhere.

        Raises:
            TypeError: ``function`` is not callable, or the strategy runs a function in new
                processes (``ddp_spawn``, ``ddp_fork``) and none was given.
        """
        if function is not None and not callable(function):
            raise TypeError(f"fabric.launch() expects a function to run in each process, got {function!r}.")
        launcher = self._strategy.launcher
        if function is None and launcher is not None and launcher.requires_function:
            raise TypeError(
                "This strategy starts new processes that run a function, not the rest of your script. "
                "Put the training in a function and call fabric.launch(train, *args); train receives "
                "the Fabric object as its first argument."
            )
        self._launched = True
        if launcher is None:
            return self._run_in_process(function, *args, **kwargs)
        return launcher.launch(self._run_in_process, function, *args, **kwargs)

    def _run_in_process(self, function: Callable[..., _T] | None, *args: Any, **kwargs: Any) -> _T | None:
        self._ensure_environment()
        if function is None:
            return None
        return function(self, *args, **kwargs)

    def _ensure_environment(self) -> None:
        if not self._environment_ready:
            launcher = self._strategy.launcher
            if not self._launched and launcher is not None and launcher.needs_launch:
                raise RuntimeError(
                    "This Fabric runs one process per device, and the other processes do not exist yet. "
                    "Call fabric.launch() first, or start the script with `fabric run` or torchrun."
                )
            self._strategy.setup_environment()
            rank_zero_only.rank = self._strategy.global_rank  # type: ignore[attr-defined]
            self._environment_ready = True

    # -- set-up -------------------------------------------------------------------------

    @overload
    def setup(self, module: nn.Module, *, move_to_device: bool = True) -> FabricModule: ...

    @overload
    def setup(
        self, module: nn.Module, optimizer: Optimizer, /, *, move_to_device: bool = True
    ) -> tuple[FabricModule, FabricOptimizer]: ...

    @overload
    def setup(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        /,
        *,
        scheduler: _Scheduler,
        move_to_device: bool = True,
    ) -> tuple[FabricModule, FabricOptimizer, _Scheduler]: ...

    @overload
    def setup(
        self, module: nn.Module, *optimizers: Optimizer, scheduler: Any = None, move_to_device: bool = True
    ) -> tuple[Any, ...]: ...

    def setup(
        self, module: nn.Module, *optimizers: Optimizer, scheduler: Any = None, move_to_device: bool = True
    ) -> Any:
        """Set up a model and its optimizers for the strategy, precision and device.

        A model compiled with ``torch.compile`` is set up in the one order that works for
        every strategy: the strategy wraps the original module first (DDP, FSDP, ...), and
        the compilation (same options) is applied on top. ``state_dict()`` and checkpoints
        keep the model's own keys (no ``_orig_mod.``).

        Args:
            module: The model (or ``torch.compile(model)``).
            *optimizers: Optimizers of the model's parameters.
            scheduler: An LR scheduler of one of the optimizers; it is returned last and keeps
                driving the learning rate of the optimizer that the strategy steps.
            move_to_device: Move the model to ``fabric.device`` (set ``False`` when it was
                created there with `init_module`).

        Returns:
            The wrapped model alone, or a tuple ``(model, *optimizers)``, or
            ``(model, *optimizers, scheduler)`` when a scheduler was given.

        Raises:
            TypeError: ``module`` is not an ``nn.Module``, an optimizer is not an
                ``Optimizer``, or ``scheduler`` is not an LR scheduler of one of them.
            ValueError: The model or an optimizer is already the result of a setup.
        """
        _check_flag("setup", "move_to_device", move_to_device)
        module, compiled = _split_compiled(module)
        self._check_module(module, optimizers)
        for optimizer in optimizers:
            self._check_optimizer(optimizer)
            _check_optimizer_of(module, optimizer)
        _check_scheduler(scheduler, optimizers)
        self._ensure_environment()
        original = module
        module = self._strategy.precision.convert_module(module)
        if move_to_device:
            self._strategy.module_to_device(module)
        if optimizers:
            forward_module, strategy_optimizers = self._strategy.setup_module_and_optimizers(
                module, list(optimizers)
            )
        else:
            forward_module, strategy_optimizers = self._strategy.setup_module(module), []
        wrapped = self._register_module(forward_module, original, compiled)
        if not optimizers:
            return wrapped
        wrapped_optimizers = tuple(FabricOptimizer(o, self._strategy) for o in strategy_optimizers)
        if scheduler is None:
            return (wrapped, *wrapped_optimizers)
        return (wrapped, *wrapped_optimizers, scheduler)

    def setup_module(self, module: nn.Module, move_to_device: bool = True) -> FabricModule:
        """Set up a model alone (set up its optimizers afterwards with `setup_optimizers`)."""
        _check_flag("setup_module", "move_to_device", move_to_device)
        module, compiled = _split_compiled(module)
        self._check_module(module)
        self._ensure_environment()
        original = module
        module = self._strategy.precision.convert_module(module)
        if move_to_device:
            self._strategy.module_to_device(module)
        return self._register_module(self._strategy.setup_module(module), original, compiled)

    @overload
    def setup_optimizers(self, optimizer: Optimizer, /) -> FabricOptimizer: ...

    @overload
    def setup_optimizers(
        self, first: Optimizer, second: Optimizer, /, *more: Optimizer
    ) -> tuple[FabricOptimizer, ...]: ...

    def setup_optimizers(self, *optimizers: Optimizer) -> Any:
        """Set up optimizers whose model was set up with `setup_module`.

        Returns:
            One optimizer, or a tuple when several were given.
        """
        if not optimizers:
            raise TypeError("fabric.setup_optimizers() needs at least one optimizer.")
        for optimizer in optimizers:
            self._check_optimizer(optimizer)
        wrapped = tuple(
            FabricOptimizer(self._strategy.setup_optimizer(o), self._strategy) for o in optimizers
        )
        return wrapped[0] if len(wrapped) == 1 else wrapped

    @overload
    def setup_dataloaders(
        self, dataloader: DataLoader, /, *, use_distributed_sampler: bool = True, move_to_device: bool = True
    ) -> FabricDataLoader: ...

    @overload
    def setup_dataloaders(
        self,
        first: DataLoader,
        second: DataLoader,
        /,
        *more: DataLoader,
        use_distributed_sampler: bool = True,
        move_to_device: bool = True,
    ) -> tuple[FabricDataLoader, ...]: ...

    def setup_dataloaders(
        self, *dataloaders: DataLoader, use_distributed_sampler: bool = True, move_to_device: bool = True
    ) -> Any:
        """Set up data loaders: shard them across processes and move batches to the device.

        Args:
            *dataloaders: The loaders.
            use_distributed_sampler: With several processes, replace the sampler with a
                ``DistributedSampler`` so each process reads its own shard (shuffling is kept;
                a custom sampler is sharded by `DistributedSamplerWrapper`).
            move_to_device: Move each batch to ``fabric.device``.

        After ``seed_everything(workers=True)`` each loader with workers also seeds every
        worker distinctly per rank and worker (`worker_init_function`).

        Returns:
            One loader, or a tuple when several were given.
        """
        if not dataloaders:
            raise TypeError("fabric.setup_dataloaders() needs at least one DataLoader.")
        _check_flag("setup_dataloaders", "use_distributed_sampler", use_distributed_sampler)
        _check_flag("setup_dataloaders", "move_to_device", move_to_device)
        self._ensure_environment()
        wrapped = []
        for loader in dataloaders:
            if isinstance(loader, FabricDataLoader):
                raise ValueError(
                    "This data loader was already set up; use the loader setup_dataloaders returned."
                )
            if not isinstance(loader, DataLoader):
                hint = (
                    " Wrap it first: setup_dataloaders(DataLoader(dataset, batch_size=...))."
                    if isinstance(loader, Dataset)
                    else ""
                )
                raise TypeError(
                    "setup_dataloaders() expects torch.utils.data.DataLoader objects, got "
                    f"{type(loader).__name__}.{hint}"
                )
            sampler_kwargs = self._strategy.distributed_sampler_kwargs
            if use_distributed_sampler and sampler_kwargs is not None and self.world_size > 1:
                loader = with_distributed_sampler(loader, **sampler_kwargs)
            if seeding_workers():
                loader = with_worker_seeding(loader, self.global_rank)
            device = self.device if move_to_device else None
            wrapped.append(FabricDataLoader(loader, device, self._strategy))
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def _register_module(
        self, forward_module: nn.Module, original: nn.Module, compiled: nn.Module | None
    ) -> FabricModule:
        if compiled is not None and not self._strategy.keep_whole_model_compile(compiled):
            compiled = None
        compiled_module = _recompile(forward_module, compiled) if compiled is not None else None
        wrapped = FabricModule(forward_module, self._strategy, original, compiled_module)
        self._set_up_modules.add(original)
        self._module_count += 1
        self._backward_module = forward_module if self._module_count == 1 else None
        self._backward_directly = plain_delegation(self._strategy, "backward")
        return wrapped

    def _check_module(self, module: Any, optimizers: Sequence[Any] = ()) -> None:
        if isinstance(module, FabricModule):
            raise ValueError(
                "This model was already set up with fabric.setup(); pass it to the loop as it is, "
                "or set up the original model once."
            )
        if not isinstance(module, nn.Module):
            hint = (
                " Pass the model first: fabric.setup(model, optimizer)."
                if isinstance(module, (Optimizer, FabricOptimizer))
                or any(isinstance(o, nn.Module) for o in optimizers)
                else ""
            )
            raise TypeError(
                f"fabric.setup() expects a torch.nn.Module first, got {type(module).__name__}.{hint}"
            )
        if module in self._set_up_modules and not self._strategy.allows_repeated_setup:
            raise ValueError(
                f"The model {type(module).__name__} was already set up with this Fabric, and "
                f"{type(self._strategy).__name__} changes a model in place when it sets it up (it shards or "
                "takes it over), so it cannot do it twice. Use the object that fabric.setup() returned."
            )

    @staticmethod
    def _check_optimizer(optimizer: Any) -> None:
        if isinstance(optimizer, FabricOptimizer):
            raise ValueError("This optimizer was already set up with fabric.setup(); use it as it is.")
        if not isinstance(optimizer, Optimizer):
            hint = (
                " An LR scheduler goes by keyword: fabric.setup(model, optimizer, scheduler=scheduler)."
                if isinstance(getattr(optimizer, "optimizer", None), Optimizer)
                else ""
            )
            raise TypeError(
                "fabric.setup() expects torch.optim.Optimizer objects after the model, got "
                f"{type(optimizer).__name__}.{hint}"
            )

    # -- training step ------------------------------------------------------------------

    def backward(
        self, tensor: torch.Tensor, *args: Any, model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        """Replace ``loss.backward()``: scales the loss for mixed precision and lets the strategy act.

        Args:
            tensor: The loss.
            *args: Passed to ``Tensor.backward``.
            model: The model the loss came from; needed only when several models were set
                up and the strategy needs to know which (DeepSpeed).
            **kwargs: Passed to ``Tensor.backward``.

        Raises:
            TypeError: ``tensor`` is not a tensor (e.g. a number from ``loss.item()``).
            ValueError: ``tensor`` does not require a gradient, or it is not a scalar and no
                ``gradient`` is given.
            RuntimeError: A multi-process strategy has not started its processes yet
                (`launch`), or no model was set up, so gradients would not be synchronised.
        """
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"fabric.backward({tensor!r}) needs the loss tensor, got a {type(tensor).__name__}. Pass the "
                "tensor itself (fabric.backward(loss)); a number such as loss.item() has no graph to differentiate."
            )
        if not tensor.requires_grad:
            raise ValueError(
                "fabric.backward() got a tensor that does not require grad, so there is nothing to "
                "differentiate. It was computed under torch.no_grad() or inference_mode(), from detached "
                "tensors, or by a model whose parameters all have requires_grad=False."
            )
        if tensor.numel() != 1 and not args and "gradient" not in kwargs:
            raise ValueError(
                f"fabric.backward() got a loss of shape {tuple(tensor.shape)}, but a loss must be one number. "
                "Reduce it first, e.g. fabric.backward(loss.mean()) or loss.sum(), or pass gradient=... of the "
                "same shape."
            )
        if not self._environment_ready:
            self._ensure_environment()
        if self._module_count == 0 and self.world_size > 1:
            raise RuntimeError(
                f"fabric.backward() was called before any model was set up, and with {self.world_size} processes "
                f"{type(self._strategy).__name__} synchronises only the gradients of models that "
                "fabric.setup(model, optimizer) returned. Set the model up and compute the loss with the result."
            )
        if model is not None and not isinstance(model, FabricModule):
            raise TypeError(
                f"fabric.backward(loss, model={type(model).__name__}(...)) needs the model that fabric.setup() "
                "returned, not the original one."
            )
        if model is None:
            if self._backward_directly:  # what the strategy would do, without its two frames
                tensor.backward(*args, **kwargs)
            else:
                self._strategy.backward(tensor, self._backward_module, *args, **kwargs)
        else:
            self._strategy.backward(tensor, unwrap(model), *args, **kwargs)

    def forward_backward(
        self,
        model: nn.Module,
        *args: Any,
        target: Any = None,
        loss_fn: Callable[..., torch.Tensor],
        **kwargs: Any,
    ) -> torch.Tensor:
        """Run one batch forward and backward, and return its loss (detached), under any strategy.

        ``loss = fabric.forward_backward(model, x, target=y, loss_fn=F.cross_entropy)`` is
        ``loss = loss_fn(model(x), y); fabric.backward(loss)``, except under a pipeline
        (``ModelParallelStrategy(pipeline_parallel_size=N)``): there the batch is split into
        micro-batches that pass through the stages by the strategy's schedule (the first
        stage reads ``args``, the last computes ``loss_fn(output, target)``), and every
        process gets the mean micro-batch loss. The optimizer step stays the loop's own, so
        a loop written this way ports to a pipeline by changing the strategy.

        Args:
            model: The model returned by `setup`.
            *args: The inputs of ``model``'s forward.
            target: The second argument of ``loss_fn``.
            loss_fn: ``(output, target) -> loss`` (a mean over the batch: micro-batch losses
                are averaged).
            **kwargs: Keyword inputs of ``model``'s forward.

        Raises:
            TypeError: ``loss_fn`` is not callable.
        """
        if not callable(loss_fn):
            raise TypeError(
                f"fabric.forward_backward(loss_fn={loss_fn!r}) needs a function (output, target) -> loss, "
                "e.g. loss_fn=torch.nn.functional.cross_entropy."
            )
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"fabric.forward_backward() takes the model returned by fabric.setup() first, got "
                f"{type(model).__name__}: fabric.forward_backward(model, x, target=y, loss_fn=...)."
            )
        return self._strategy.forward_backward(
            model, args, kwargs, target, loss_fn, lambda loss: self.backward(loss, model=model)
        )

    def clip_gradients(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        clip_val: float | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor | None:
        """Clip gradients by value (``clip_val``) or by total norm (``max_norm``), after unscaling.

        Call it after `backward` and before ``optimizer.step()``.

        Args:
            module: The model returned by `setup`.
            optimizer: The optimizer returned by `setup`, whose parameters are clipped.
            clip_val: Clamp every gradient element to ``[-clip_val, clip_val]`` (``> 0``).
            max_norm: Scale the gradients so their joint norm is at most this (``> 0``).
            norm_type: The p of the p-norm (``inf`` for the max norm).
            error_if_nonfinite: Raise when the total norm is nan or inf.

        Returns:
            The total norm before clipping when ``max_norm`` is given, else ``None``. A
            strategy whose library clips inside its optimizer step (DeepSpeed) clips in the
            next ``optimizer.step()``; where it can only measure the norm there (ZeRO stage 0
            in bf16/fp16) the tensor is filled by that step and says so once.

        Raises:
            ValueError: Neither or both of ``clip_val`` and ``max_norm`` were given, or the
                one given is not a positive number.
            TypeError: ``module`` and ``optimizer`` are not a model and an optimizer (e.g.
                passed in the wrong order).
        """
        _check_clip_arguments(module, optimizer, clip_val, max_norm)
        forward_module, raw_optimizer = unwrap(module), unwrap(optimizer)
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(
                forward_module,
                raw_optimizer,
                float(max_norm),
                norm_type=norm_type,
                error_if_nonfinite=error_if_nonfinite,
            )
        self._strategy.clip_gradients_value(forward_module, raw_optimizer, float(clip_val))  # type: ignore[arg-type]
        return None

    def autocast(self) -> AbstractContextManager[Any]:
        """The precision's forward context, for computations outside the set-up model's forward."""
        return self._strategy.precision.forward_context()

    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> AbstractContextManager[Any]:
        """Skip gradient synchronisation in the backward passes inside the block.

        Use it for gradient accumulation: only the last micro-batch's backward (outside the
        block) communicates. With one process it does nothing.

        Raises:
            TypeError: ``module`` was not set up with this Fabric.
        """
        if not isinstance(module, FabricModule):
            raise TypeError(
                "fabric.no_backward_sync() needs the model returned by fabric.setup(), "
                f"got {type(module).__name__}."
            )
        return self._strategy.no_backward_sync(module._forward_module, enabled)

    # -- devices and collectives --------------------------------------------------------

    def to_device(self, obj: _T) -> _T:
        """Move a module, a tensor, or every tensor in a collection to ``fabric.device``."""
        if isinstance(obj, nn.Module):
            self._strategy.module_to_device(obj)
            return obj
        return self._strategy.batch_to_device(obj)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank 0 only."""
        if self.is_global_zero:
            print(*args, **kwargs)

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this call."""
        self._ensure_environment()
        self._strategy.barrier(name=name)

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        """Send ``obj`` from process ``src`` to every process and return it.

        Raises:
            ValueError: ``src`` is not the global rank of a process of the run.
        """
        self._ensure_environment()
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(
                f"fabric.broadcast(obj, src={src!r}): src is the global rank that sends, from 0 to "
                f"{self.world_size - 1} in this run of {self.world_size} process(es)."
            )
        return self._strategy.broadcast(obj, src=src)

    def all_gather(self, data: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        """Gather tensors from every process: each tensor gets a leading ``world_size`` dimension.

        Works on a tensor, a Python number, or every tensor and number in a collection
        (numbers are turned into tensors on ``fabric.device`` first, as Lightning does).
        With ``sync_grads=True`` gradients flow back through the gather.

        Raises:
            TypeError: ``data`` holds something that is neither a tensor nor a number (use
                `broadcast` or ``torch.distributed.all_gather_object`` for other objects).
        """
        self._ensure_environment()
        data = convert_to_tensors(data, self.device)
        _check_tensors_only(data, "all_gather")
        return apply_to_tensors(
            data, lambda t: self._strategy.all_gather(t, group=group, sync_grads=sync_grads)
        )

    def all_reduce(self, data: Any, group: Any | None = None, reduce_op: str | None = "mean") -> Any:
        """Reduce across processes (``"mean"``, ``"sum"``, ``"max"``, ``"min"``, ``"product"``).

        Works on a tensor, a Python number, or every tensor and number in a collection:
        numbers are turned into tensors on ``fabric.device`` and reduced, so
        ``fabric.all_reduce(loss.item())`` returns the mean over processes as a tensor.
        Integer tensors are averaged as floats.

        Raises:
            ValueError: ``reduce_op`` is not one of the names above (checked with one process too).
            TypeError: ``reduce_op`` is neither a name nor a ``torch.distributed.ReduceOp``, or
                ``data`` holds something that is neither a tensor nor a number.
        """
        check_reduce_op(reduce_op)
        self._ensure_environment()
        data = convert_to_tensors(data, self.device)
        _check_tensors_only(data, "all_reduce")
        return apply_to_tensors(data, lambda t: self._strategy.reduce(t, group=group, reduce_op=reduce_op))

    @contextmanager
    def rank_zero_first(self, local: bool = False) -> Generator[None, None, None]:
        """Run the block on rank 0 first, then on the other processes (e.g. to download once).

        Args:
            local: Order by rank on each machine instead of globally.
        """
        self._ensure_environment()
        rank = self.local_rank if local else self.global_rank
        if rank > 0:
            self.barrier("rank_zero_first")
        yield
        if rank == 0:
            self.barrier("rank_zero_first")

    # -- initialisation -----------------------------------------------------------------

    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager[Any]:
        """A context that creates models on the device, in the precision's dtype.

        Args:
            empty_init: Skip weight initialisation, for weights loaded right afterwards
                (sharding strategies may also create the model on the meta device).
        """
        if empty_init is not None:
            _check_flag("init_module", "empty_init", empty_init)
        self._ensure_environment()
        return self._strategy.module_init_context(empty_init=empty_init)

    def init_tensor(self) -> AbstractContextManager[Any]:
        """A context that creates tensors on the device, in the precision's dtype."""
        self._ensure_environment()
        return self._strategy.tensor_init_context()

    # -- checkpoints --------------------------------------------------------------------

    def save(
        self,
        path: str | Path,
        state: dict[str, Any],
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Save models, optimizers and any other state to ``path``.

        Example: ``fabric.save("ckpt.pt", {"model": model, "optimizer": optimizer, "step": step})``.
        The file is written atomically: an error or a kill mid-write leaves a previous
        checkpoint intact. Every process must call it; if rank 0 cannot write, every
        process raises.

        Raises:
            TypeError: ``path`` and ``state`` are swapped, or ``state`` holds an object that
                pickle cannot store (named in the message).
            PermissionError, OSError, IsADirectoryError, NotADirectoryError: The path cannot
                be written (a read-only directory, a full disk, a directory or a file in the way).
        """
        from fabric_core.utilities.checkpoint import check_path_argument

        self._ensure_environment()
        check_path_argument("save", path, state)
        self._strategy.save_checkpoint(path, _unwrap_state(state), filter=filter)
        self._strategy.barrier()

    def load(
        self,
        path: str | Path,
        state: dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Restore a checkpoint written by `save` into the objects in ``state``.

        Models, optimizers and objects with ``load_state_dict`` are restored in place; any
        other entry of ``state`` is replaced by the saved value.

        Returns:
            The checkpoint entries that ``state`` did not name (the whole checkpoint when
            ``state`` is ``None``).

        Raises:
            FileNotFoundError: Nothing is at ``path`` (the message says what is nearby).
            ValueError: The file is empty, truncated, corrupted or not a checkpoint; or it is a
                plain state dict (load it with `load_raw`).
            KeyError: ``strict`` and ``state`` names an entry the checkpoint lacks.
            TypeError: An entry does not fit its object (e.g. names swapped in ``state``).
            StateDictMismatchError: A model's keys or shapes do not fit (a ``RuntimeError``).
        """
        from fabric_core.utilities.checkpoint import check_path_argument

        self._ensure_environment()
        check_path_argument("load", path, state)
        if isinstance(state, (nn.Module, Optimizer, FabricOptimizer)):
            name = "model" if isinstance(state, nn.Module) else "optimizer"
            raise TypeError(
                f"fabric.load(path, {name}) got a bare {type(unwrap(state)).__name__}; the state is a dict of "
                f"names to objects: fabric.load(path, {{'{name}': {name}, ...}}) with the names given to "
                f"fabric.save. For a plain torch.save({name}.state_dict()) file, use fabric.load_raw(path, {name})."
            )
        unwrapped = _unwrap_state(state) if state is not None else None
        remainder = self._strategy.load_checkpoint(path, unwrapped, strict=strict, weights_only=weights_only)
        if state is not None and unwrapped is not None:
            for key, value in unwrapped.items():
                if not isinstance(state[key], (nn.Module, Optimizer, FabricOptimizer)) and not callable(
                    getattr(state[key], "load_state_dict", None)
                ):
                    state[key] = value
        return remainder

    def load_raw(self, path: str | Path, obj: nn.Module | Optimizer, strict: bool = True) -> None:
        """Load a plain state-dict file (e.g. from ``torch.save(model.state_dict())``) into ``obj``.

        Raises:
            TypeError: ``obj`` is not a model or optimizer, or the file is a checkpoint of
                named entries from `save` (load that with `load`).
            StateDictMismatchError: A model's keys or shapes do not fit (a ``RuntimeError``).
        """
        from fabric_core.utilities.checkpoint import check_path_argument

        self._ensure_environment()
        check_path_argument("load_raw", path, obj)
        raw = unwrap(obj)
        if not isinstance(raw, (nn.Module, Optimizer)):
            raise TypeError(
                f"fabric.load_raw(path, obj) loads into one model or optimizer, got {type(raw).__name__}. For a "
                "checkpoint of named entries use fabric.load(path, {'model': model, ...})."
            )
        self._strategy.load_checkpoint(path, raw, strict=strict)

    # -- callbacks and loggers ----------------------------------------------------------

    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook_name(*args, **kwargs)`` on every callback that defines it.

        Each callback receives only the keyword arguments its method accepts (all of them
        if it takes ``**kwargs``), so callbacks can ignore what they do not need.
        """
        for callback in self._callbacks:
            method = getattr(callback, hook_name, None)
            if callable(method):
                method(*args, **_accepted_kwargs(method, kwargs))

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Send one metric to every logger; see `log_dict`."""
        if not self._loggers:
            self._warn_no_logger()
            return
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Send several metrics to every logger (scalar tensors become Python numbers).

        Every process calls each logger's ``log_metrics``; the loggers of
        `fabric_core.loggers` write from global rank 0 only. Without loggers the
        metrics go nowhere, and the first call warns once.
        """
        if not self._loggers:
            self._warn_no_logger()
            return
        metrics = apply_to_tensors(metrics, lambda t: t.item() if t.numel() == 1 else t)
        for logger in self._loggers:
            logger.log_metrics(metrics=metrics, step=step)

    @staticmethod
    def _warn_no_logger() -> None:
        warn_once(
            "fabric.log()/fabric.log_dict() was called, but this Fabric has no logger, so the metrics go "
            "nowhere. Pass one: Fabric(loggers=CSVLogger('logs')) with `from fabric_core.loggers import CSVLogger`.",
            stacklevel=4,  # the user's call of log or log_dict
        )

    @staticmethod
    def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
        """Seed every random generator; see `fabric_core.seed_everything`."""
        return _seed_everything(seed, workers=workers, verbose=verbose)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled when a spawned process receives the launch function; set-up state stays behind.
        state = dict(self.__dict__)
        state["_set_up_modules"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_up_modules = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Fabric(strategy={self._strategy!r})"


def _unwrap_state(state: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise TypeError(
            f"The state must be a dict of names to objects, got {type(state).__name__}. "
            "Example: {'model': model, 'optimizer': optimizer, 'step': step}."
        )
    return {key: unwrap(value) for key, value in state.items()}


def _split_compiled(module: Any) -> tuple[Any, nn.Module | None]:
    """``(original, compiled)`` for a ``torch.compile``'d module, else ``(module, None)``."""
    if "torch._dynamo" not in sys.modules:  # nothing was compiled: keep torch._dynamo unimported
        return module, None
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(module, OptimizedModule):
        return module._orig_mod, module
    return module, None


def _recompile(forward_module: nn.Module, compiled: nn.Module) -> nn.Module:
    """``forward_module`` compiled with the options of ``compiled`` (the user's ``torch.compile``)."""
    from torch._dynamo.eval_frame import OptimizedModule

    return OptimizedModule(forward_module, compiled.dynamo_ctx)  # type: ignore[arg-type]


def _check_optimizer_of(module: nn.Module, optimizer: Optimizer) -> None:
    """Refuse an optimizer that steps none of the module's parameters: the model would never change."""
    own = {id(parameter) for parameter in module.parameters()}
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    if stepped and not any(id(parameter) in own for parameter in stepped):
        name = type(optimizer).__name__
        raise ValueError(
            f"fabric.setup({type(module).__name__}, {name}): the {name} optimizer holds none of the model's "
            "parameters (it was built over another model, or over a copy), so training would never change this "
            f"model. Build it over this model: {name}(model.parameters(), ...)."
        )


def _check_tensors_only(data: Any, method: str) -> None:
    """Refuse a collective's input that holds something other than tensors (numbers are tensors by now)."""
    from torch.utils._pytree import keystr, tree_flatten_with_path

    leaves, _ = tree_flatten_with_path(data)
    for path, leaf in leaves:
        if isinstance(leaf, torch.Tensor) or (dataclasses.is_dataclass(leaf) and not isinstance(leaf, type)):
            continue
        where = f" at {keystr(path)}" if path else ""
        raise TypeError(
            f"fabric.{method}() communicates tensors and numbers, but got {leaf!r}{where} "
            f"({type(leaf).__name__}). Leave it out, or send other objects with fabric.broadcast(obj) or "
            "torch.distributed.all_gather_object."
        )


def _check_scheduler(scheduler: Any, optimizers: Sequence[Optimizer]) -> None:
    if scheduler is None:
        return
    if not optimizers:
        raise TypeError(
            "fabric.setup(model, scheduler=...) needs the scheduler's optimizer too: setup(model, opt, scheduler=s)."
        )
    owner = getattr(scheduler, "optimizer", None)
    if not callable(getattr(scheduler, "step", None)) or owner is None:
        raise TypeError(
            "fabric.setup(scheduler=...) expects an LR scheduler (torch.optim.lr_scheduler), got "
            f"{type(scheduler).__name__}."
        )
    if not any(owner is unwrap(optimizer) or owner is optimizer for optimizer in optimizers):
        raise TypeError(
            "fabric.setup(scheduler=...) got a scheduler of another optimizer than the ones passed. Build the "
            "scheduler on one of them: setup(model, optimizer, scheduler=LambdaLR(optimizer, ...))."
        )


def _check_clip_arguments(module: Any, optimizer: Any, clip_val: Any, max_norm: Any) -> None:
    if isinstance(module, (Optimizer, FabricOptimizer)) and isinstance(optimizer, nn.Module):
        raise TypeError(
            "fabric.clip_gradients() takes the model first and the optimizer second: "
            "clip_gradients(model, optimizer, max_norm=...)."
        )
    if not isinstance(module, nn.Module) or not isinstance(optimizer, (Optimizer, FabricOptimizer)):
        raise TypeError(
            "fabric.clip_gradients(model, optimizer, ...) needs the model and the optimizer fabric.setup() "
            f"returned, got {type(module).__name__} and {type(optimizer).__name__}."
        )
    if (clip_val is None) == (max_norm is None):
        given = "both" if clip_val is not None else "neither"
        raise ValueError(
            f"fabric.clip_gradients() needs exactly one of clip_val= (clip each element) or max_norm= (clip the "
            f"total norm), got {given}."
        )
    name, value = ("clip_val", clip_val) if clip_val is not None else ("max_norm", max_norm)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"fabric.clip_gradients({name}={value!r}): {name} must be a positive number. A value <= 0 would "
            "zero or flip the gradients; to turn clipping off, do not call clip_gradients."
        )


def _check_flag(method: str, name: str, value: Any) -> None:
    """Refuse a flag that is not a bool: ``"no"`` or ``0.5`` would otherwise count as True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"fabric.{method}({name}={value!r}): {name} must be True or False.")


def _accepted_kwargs(method: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return kwargs
    names = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return {key: value for key, value in kwargs.items() if key in names}


def _checked_loggers(value: Any) -> list[Any]:
    loggers = _as_list(value)
    for position, logger in enumerate(loggers):
        if isinstance(logger, type):
            raise TypeError(
                f"Fabric(loggers={logger.__name__}) is a class; pass an instance of it, e.g. "
                f"Fabric(loggers={logger.__name__}('logs'))."
            )
        if not callable(getattr(logger, "log_metrics", None)):
            given = f"loggers={logger!r}" if logger is value else f"loggers[{position}]={logger!r}"
            raise TypeError(
                f"Fabric({given}): a logger is an object with a log_metrics(metrics, step) method, and "
                f"{type(logger).__name__} has none. Pass one or a list of them, e.g. "
                "Fabric(loggers=CSVLogger('logs')) with `from fabric_core.loggers import CSVLogger`."
            )
    return loggers


def _checked_callbacks(value: Any) -> list[Any]:
    callbacks = _as_list(value)
    for position, callback in enumerate(callbacks):
        given = f"callbacks={callback!r}" if callback is value else f"callbacks[{position}]={callback!r}"
        if isinstance(callback, type):
            raise TypeError(
                f"Fabric({given}) is a class; pass an instance of it: Fabric(callbacks=[{callback.__name__}()])."
            )
        if isinstance(callback, (bool, int, float, complex, str, bytes)) or not _has_public_methods(callback):
            raise TypeError(
                f"Fabric({given}): a callback is an instance of a class whose methods are the hooks that "
                f"fabric.call(name, ...) runs, and a {type(callback).__name__} has no such methods. Pass one or a "
                "list of them, e.g. Fabric(callbacks=[MyCallback()])."
            )
    return callbacks


def _has_public_methods(obj: Any) -> bool:
    # Looked up without calling properties: only methods of the class and callables set on the instance.
    own = vars(obj) if hasattr(obj, "__dict__") else {}
    return any(
        not name.startswith("_") and callable(inspect.getattr_static(obj, name, None))
        for name in {*dir(type(obj)), *own}
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]
