"""DistributedDataParallel: one process per device, gradients all-reduced in backward."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launchers.elastic import StartMethod
from fabric_core.precision.precision import Precision
from fabric_core.strategies.parallel import ParallelStrategy

__all__ = ["DDPStrategy"]


class DDPStrategy(ParallelStrategy):
    """Data parallel training with ``torch.nn.parallel.DistributedDataParallel``.

    Every process holds a full replica of the model and a shard of the data. In backward,
    DDP all-reduces gradient buckets while the rest of backward still runs, so after
    ``fabric.backward(loss)`` every replica holds the average gradient and the optimizer
    steps keep the replicas identical. Memory per process is that of single-device
    training plus the gradient buckets.

    Args:
        parallel_devices: One device per process on this node; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from; detected when omitted.
        checkpoint_io: How checkpoints are written.
        precision_plugin: The precision plugin; built from ``Fabric(precision=...)`` when omitted.
        ddp_comm_state: State passed to ``ddp_comm_hook`` (e.g. a ``PowerSGDState``, or the
            ``PostLocalSGDState`` that ``model_averaging_period`` needs).
        ddp_comm_hook: A communication hook, e.g. ``default_hooks.fp16_compress_hook``.
        ddp_comm_wrapper: A hook wrapper applied to ``ddp_comm_hook``, e.g.
            ``default_hooks.fp16_compress_wrapper``.
        model_averaging_period: Post-local SGD: after the warm-up steps of the
            ``PostLocalSGDState``, replicas train locally and their parameters are averaged
            every this many optimizer steps. Requires ``ddp_comm_state`` to be a
            ``PostLocalSGDState`` and ``ddp_comm_hook`` to be ``post_localSGD_hook``.
        process_group_backend: ``"gloo"`` (CPU default), ``"nccl"`` (CUDA default), ...;
            ``None``: the accelerator's default.
        timeout: How long collectives wait for the other processes (``None``: 5 minutes on
            gloo, so a skipped collective surfaces quickly; torch's default otherwise).
        accelerator: The accelerator; set by ``Fabric`` when omitted.
        start_method: ``"popen"`` (re-run the script), ``"spawn"`` or ``"fork"`` (run
            ``fabric.launch(fn)``'s function in new processes).
        precision: Lightning Fabric's name for ``precision_plugin`` (pass one of the two).
        **kwargs: Passed to ``DistributedDataParallel`` (``find_unused_parameters``,
            ``gradient_as_bucket_view``, ``static_graph``, ``bucket_cap_mb``, ...).

    The parameters up to ``timeout`` may be given by position, in this order;
    ``accelerator``, ``start_method`` and ``precision`` are keyword-only.

    Set-up runs in two steps: `setup_environment` selects the device and calls
    `setup_distributed` (the process group), and `setup_module` calls
    `configure_ddp` (device ids, communication hook, model averaging) and then
    wraps the module with what it prepared.

    Raises:
        TypeError: A keyword argument that ``DistributedDataParallel`` does not accept, or a
            ``ddp_comm_hook`` / ``ddp_comm_wrapper`` that is not a function of the right arguments.
        ValueError: ``model_averaging_period`` without the post-local SGD state and hook, or
            ``ddp_comm_state`` / ``ddp_comm_wrapper`` without a ``ddp_comm_hook``.
    """

    def __init__(
        self,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        ddp_comm_state: object | None = None,
        ddp_comm_hook: Callable[..., Any] | None = None,
        ddp_comm_wrapper: Callable[..., Any] | None = None,
        model_averaging_period: int | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        *,
        accelerator: Accelerator | None = None,
        start_method: StartMethod = "popen",
        precision: Precision | None = None,
        **kwargs: Any,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            cluster_environment=cluster_environment,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
            precision=precision,
        )
        _check_ddp_kwargs(type(self).__name__, kwargs)
        _check_comm_hook(ddp_comm_state, ddp_comm_hook, ddp_comm_wrapper)
        _check_model_averaging(model_averaging_period, ddp_comm_state, ddp_comm_hook)
        self._ddp_comm_state = ddp_comm_state
        self._ddp_comm_hook = ddp_comm_hook
        self._ddp_comm_wrapper = ddp_comm_wrapper
        self._model_averaging_period = model_averaging_period
        self._model_averager: Any = None
        self._ddp_kwargs = kwargs
        # what configure_ddp() prepares for the next setup_module()
        self._ddp_module_kwargs: dict[str, Any] = {}
        self._resolved_comm_hook: Callable[..., Any] | None = None

    # -- set-up ---------------------------------------------------------------------------

    def configure_ddp(self) -> None:
        """Prepare what `setup_module` needs to build and hook the DDP module.

        Resolves the ``device_ids`` (this process's CUDA device, none on other devices)
        and merges them with the ``DistributedDataParallel`` keyword arguments, applies
        ``ddp_comm_wrapper`` to ``ddp_comm_hook``, and for post-local SGD builds the model
        averager (forming the averaging subgroup, one node's processes, when the
        ``PostLocalSGDState`` has none). `setup_module` calls it for every module.

        Raises:
            RuntimeError: No process group exists yet (call it after `setup_environment`,
                which ``fabric.launch()`` runs).
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DDPStrategy.configure_ddp() needs the process group: call it after setup_environment() "
                "(fabric.launch() does), or set the module up with fabric.setup(...) after fabric.launch()."
            )
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        self._ddp_module_kwargs = {"device_ids": device_ids, **self._ddp_kwargs}
        hook = self._ddp_comm_hook
        if hook is not None and self._ddp_comm_wrapper is not None:
            hook = self._ddp_comm_wrapper(hook)
        self._resolved_comm_hook = hook
        if self._model_averaging_period is not None:
            from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

            state: Any = self._ddp_comm_state
            if state.subgroup is None:
                # torch's default subgroup size is the CUDA device count, which is 0 on a CPU:
                # use the processes of one node instead, the same grouping on GPUs.
                state.subgroup, _ = dist.new_subgroups(group_size=self.num_processes)
            self._model_averager = PeriodicModelAverager(
                period=self._model_averaging_period, warmup_steps=state.start_localSGD_iter
            )

    def setup_module(self, module: nn.Module) -> DistributedDataParallel:
        """Wrap the module in ``DistributedDataParallel`` as `configure_ddp` prepared it.

        Parameters are broadcast from rank 0 when the wrapper is built, so every replica
        starts from the same weights. The communication hook, if any, is registered on the
        new wrapper.
        """
        self.configure_ddp()
        ddp = DistributedDataParallel(module, **self._ddp_module_kwargs)
        if self._resolved_comm_hook is not None:
            ddp.register_comm_hook(state=self._ddp_comm_state, hook=self._resolved_comm_hook)
        return ddp

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step, then (post-local SGD) average the parameters across replicas every period."""
        result = super().optimizer_step(optimizer, **kwargs)
        if self._model_averager is not None:
            self._model_averager.average_parameters(optimizer.param_groups)
        return result

    @contextmanager
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> Iterator[None]:
        """Skip DDP's gradient all-reduce in backward passes inside the block.

        Gradients accumulate locally; the first backward outside the block all-reduces the
        accumulated sum. Use it for all micro-batches but the last of an accumulation step.

        Raises:
            TypeError: ``module`` is not the DDP module this strategy set up.
        """
        if not enabled:
            yield
            return
        if not isinstance(module, DistributedDataParallel):
            raise TypeError(
                f"no_backward_sync needs the model set up by this DDP strategy, got {type(module).__name__}."
            )
        with module.no_sync():
            yield

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """The replica's state dict, with the user's keys (no ``module.`` prefix)."""
        return _unwrap(module).state_dict()

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load a full state dict into the replica (every process loads the same file); checked as the base class does."""
        super().load_module_state_dict(_unwrap(module), state_dict, strict=strict)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self._process_group_backend or 'auto'}, start_method="
            f"{getattr(self._launcher, 'start_method', None)!r}, precision={self._precision!r})"
        )


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def _check_ddp_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that ``DistributedDataParallel`` does not take, naming the class built (``owner``)."""
    import inspect

    accepted = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {
        "self",
        "module",
        "device_ids",
    }
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        close = [match for name in unknown for match in difflib.get_close_matches(name, accepted, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        subclass = (
            ""
            if owner == "DDPStrategy"
            else f" {owner}'s own arguments must be named parameters of its __init__, so that they are taken "
            "before the rest reaches DDPStrategy."
        )
        raise TypeError(
            f"{owner} got unknown argument(s) {', '.join(unknown)}. Extra keyword arguments of DDPStrategy are "
            f"passed to DistributedDataParallel, which accepts: {', '.join(sorted(accepted))}.{hint}{subclass}"
        )


def _check_comm_hook(state: object | None, hook: Any, wrapper: Any) -> None:
    """Refuse a communication hook DDP would reject only at ``fabric.setup``, or settings without a hook."""
    if hook is None:
        for name, value in (("ddp_comm_state", state), ("ddp_comm_wrapper", wrapper)):
            if value is not None:
                raise ValueError(
                    f"DDPStrategy({name}={value!r}) has no effect without ddp_comm_hook: pass the hook it belongs "
                    "to as well, e.g. ddp_comm_hook=powerSGD_hook.powerSGD_hook with its PowerSGDState."
                )
        return
    _check_callable("ddp_comm_hook", hook, 2, "hook(state, bucket) -> torch.futures.Future[torch.Tensor]")
    if wrapper is not None:
        _check_callable(
            "ddp_comm_wrapper", wrapper, 1, "wrapper(hook) -> hook, e.g. default_hooks.fp16_compress_wrapper"
        )


def _check_callable(argument: str, value: Any, positional: int, shape: str) -> None:
    import inspect

    source = "torch.distributed.algorithms.ddp_comm_hooks (default_hooks, powerSGD_hook, ...)"
    if not callable(value):
        raise TypeError(
            f"DDPStrategy({argument}={value!r}) must be a function {shape}; take one from {source}."
        )
    try:
        inspect.signature(value).bind(*range(positional))
    except TypeError:
        name = getattr(value, "__qualname__", repr(value))
        raise TypeError(
            f"DDPStrategy({argument}={name}) takes the wrong arguments {inspect.signature(value)}: DDP calls it as "
            f"{shape}. Take one from {source}, or bind extra parameters with functools.partial."
        ) from None
    except ValueError:  # no signature to inspect (a builtin): DDP will tell
        return


def _check_model_averaging(period: int | None, state: object | None, hook: Callable[..., Any] | None) -> None:
    if period is None:
        return
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"model_averaging_period={period!r} must be a positive number of optimizer steps.")
    from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
        PostLocalSGDState,
        post_localSGD_hook,
    )

    if not isinstance(state, PostLocalSGDState) or hook is not post_localSGD_hook:
        raise ValueError(
            "model_averaging_period (post-local SGD) needs ddp_comm_state=PostLocalSGDState(process_group=None, "
            "subgroup=..., start_localSGD_iter=N) and ddp_comm_hook=post_localSGD_hook from "
            "torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook."
        )
