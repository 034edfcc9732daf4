"""The objects ``Fabric.setup*`` returns: the user's module, optimizer and loader, wired in.

Each wrapper behaves like the object it wraps (attribute access, ``state_dict``,
``isinstance``) and adds only what the strategy needs on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import MethodType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules import module as _torch_module
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fabric_core.strategies.strategy import plain_delegation

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["FabricDataLoader", "FabricModule", "FabricOptimizer", "is_wrapped", "unwrap"]


class FabricModule(nn.Module):
    """A module set up by ``Fabric``: forward runs under the precision plugin.

    Attribute access reaches the original module, and ``state_dict`` /
    ``load_state_dict`` use the original module's keys (no wrapper prefix, no
    ``_orig_mod.`` of ``torch.compile``), so checkpoints stay interchangeable with plain
    PyTorch.

    Only ``forward`` runs through the strategy's wrapper (DDP's gradient hooks, FSDP's
    all-gathers). To run another method that way, e.g. ``generate``, mark it once with
    `mark_forward_method`; calling an unmarked method that runs submodules on a
    wrapped model warns once.

    Args:
        forward_module: What the strategy returned (the module itself, or e.g. a DDP wrapper).
        strategy: The strategy that set it up.
        original_module: The module the user passed.
        compiled_module: ``forward_module`` under ``torch.compile``, when the user passed a
            compiled module; forward calls it instead of ``forward_module``.
    """

    def __init__(
        self,
        forward_module: nn.Module,
        strategy: Strategy,
        original_module: nn.Module,
        compiled_module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self._forward_module = forward_module
        self._original_module = original_module
        object.__setattr__(
            self, "_call_module", forward_module if compiled_module is None else compiled_module
        )
        self._strategy = strategy
        self._precision = strategy.precision
        self._passthrough = strategy.precision.is_passthrough
        self._forward_methods: set[str] = set()
        self._wraps = forward_module is not original_module or hasattr(original_module, "reshard")
        self._fabric_initialized = True

    @property
    def module(self) -> nn.Module:
        """The module the user passed to ``setup``."""
        return self._original_module

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter (or buffer); the strategy's device if it has none."""
        for tensor in (*self._original_module.parameters(), *self._original_module.buffers()):
            return tensor.device
        return self._strategy.root_device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's forward under the precision plugin's casting and context."""
        call_module = self._call_module
        if self._passthrough:
            return call_module(*args, **kwargs)
        precision = self._precision
        args, kwargs = precision.convert_input((args, kwargs))
        with precision.forward_context():
            output = call_module(*args, **kwargs)
        return precision.convert_output(output)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.__call__``, without a second pass through torch's hook machinery.

        With no hooks on the wrapper, no global module hooks, no ``compile()`` of the wrapper
        and no TorchScript tracing, torch's ``_call_impl`` would call ``forward`` directly:
        this calls it. The wrapped module's own call still goes through torch (its hooks,
        DDP's and FSDP's wrappers run as usual).
        """
        if (
            self._compiled_call_impl is None
            and not (
                self._forward_pre_hooks
                or self._forward_hooks
                or self._backward_pre_hooks
                or self._backward_hooks
                or _torch_module._global_forward_pre_hooks
                or _torch_module._global_forward_hooks
                or _torch_module._global_backward_pre_hooks
                or _torch_module._global_backward_hooks
            )
            and not torch._C._get_tracing_state()
        ):
            return self.forward(*args, **kwargs)
        return self._wrapped_call_impl(*args, **kwargs)

    def mark_forward_method(self, method: str | MethodType) -> None:
        """Run ``method`` of the original module through the strategy's wrapper, like ``forward``.

        A model wrapped by DDP or sharded by FSDP only synchronises or gathers its
        parameters inside the wrapper's forward. After marking, ``model.generate(...)``
        runs as ``forward`` does: through the wrapper, under the precision plugin.

        Raises:
            TypeError: ``method`` is neither a name nor a method.
            ValueError: ``method`` is ``forward`` or is not a method of the original module.
        """
        if not isinstance(method, (str, MethodType)):
            raise TypeError(
                f"mark_forward_method({method!r}) takes a method of the model or its name, e.g. "
                "model.mark_forward_method('generate')."
            )
        name = method if isinstance(method, str) else method.__name__
        if name == "forward":
            raise ValueError("forward already runs through the strategy; mark other methods only.")
        target = getattr(self._original_module, name, None)
        if not isinstance(target, MethodType):
            raise ValueError(
                f"mark_forward_method({name!r}): {type(self._original_module).__name__} has no method {name!r}."
            )
        self._forward_methods.add(name)

    def _through_forward(self, name: str) -> Callable[..., Any]:
        original = self._original_module
        method = getattr(original, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            saved = original.__dict__.get("forward")

            def redirected(*inner_args: Any, **inner_kwargs: Any) -> Any:
                _restore_forward(original, saved)  # inside the method, forward is forward again
                return method(*inner_args, **inner_kwargs)

            original.__dict__["forward"] = redirected
            try:
                return self.forward(*args, **kwargs)
            finally:
                _restore_forward(original, saved)

        return call

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The original module's state dict."""
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load into the original module."""
        return self._original_module.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        if name in self.__dict__.get("_forward_methods", ()):
            return self._through_forward(name)
        original: nn.Module = self.__dict__["_modules"]["_original_module"]
        value = getattr(original, name)
        if self.__dict__.get("_wraps") and isinstance(value, MethodType) and not hasattr(nn.Module, name):
            return _warn_if_submodules_run(value, original, name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if not self.__dict__.get("_fabric_initialized", False) or name in self.__dict__:
            super().__setattr__(name, value)
            return
        original = self._original_module
        if hasattr(original, name) and not hasattr(type(self), name):
            setattr(original, name, value)
        else:
            super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"FabricModule({self._original_module!r})"


def _restore_forward(module: nn.Module, saved: Any) -> None:
    if saved is None:
        module.__dict__.pop("forward", None)
    else:
        module.__dict__["forward"] = saved


def _warn_if_submodules_run(method: MethodType, module: nn.Module, name: str) -> Callable[..., Any]:
    """``method``, warning once if it runs a submodule outside the wrapper's forward."""
    from fabric_core.utilities.rank_zero import warn_once

    submodules = {id(m) for m in module.modules()}

    def call(*args: Any, **kwargs: Any) -> Any:
        def hook(submodule: nn.Module, _: Any) -> None:
            if id(submodule) in submodules:
                warn_once(
                    f"{type(module).__name__}.{name}() runs submodules outside the strategy's wrapper, which "
                    "may skip gradient synchronisation or parameter gathering. Mark it once after setup: "
                    f"model.mark_forward_method({name!r})."
                )

        handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        try:
            return method(*args, **kwargs)
        finally:
            handle.remove()

    return call


class FabricOptimizer:
    """An optimizer set up by ``Fabric``: ``step()`` goes through the strategy.

    Instances are also instances of the wrapped optimizer's class, and every attribute
    (``param_groups``, ``state``, ``defaults``) is the wrapped optimizer's own, live.
    """

    _own = frozenset({"_optimizer", "_strategy", "_steps_directly"})

    def __new__(cls, optimizer: Optimizer, strategy: Strategy) -> FabricOptimizer:
        """Create the instance as a subclass of both this class and the optimizer's class."""
        subclass = _optimizer_subclass(type(optimizer))
        return object.__new__(subclass)

    def __init__(self, optimizer: Optimizer, strategy: Strategy) -> None:
        object.__setattr__(self, "_optimizer", optimizer)
        object.__setattr__(self, "_strategy", strategy)
        object.__setattr__(self, "_steps_directly", plain_delegation(strategy, "optimizer_step"))

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer the user passed to ``setup``."""
        return self._optimizer

    def step(self, closure: Any = None) -> Any:
        """Step the optimizer through the strategy (precision scaling, sharded state, ...)."""
        if closure is None:
            if self._steps_directly:  # what the strategy would do, without its two frames
                return self._optimizer.step()
            return self._strategy.optimizer_step(self._optimizer)
        return self._strategy.optimizer_step(self._optimizer, closure=closure)

    def zero_grad(self, *args: Any, **kwargs: Any) -> None:
        """Reset the gradients of the optimized parameters (arguments go to the optimizer's ``zero_grad``)."""
        self._optimizer.zero_grad(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state dict, as the strategy sees it."""
        return self._strategy.get_optimizer_state(self._optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state into the wrapped optimizer."""
        self._optimizer.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_optimizer"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own or hasattr(FabricOptimizer, name):
            object.__setattr__(self, name, value)
        else:
            setattr(self._optimizer, name, value)

    def __repr__(self) -> str:
        return f"FabricOptimizer({self._optimizer!r})"


_SUBCLASSES: dict[type, type] = {}


def _optimizer_subclass(optimizer_class: type) -> type:
    subclass = _SUBCLASSES.get(optimizer_class)
    if subclass is None:
        subclass = type(f"Fabric{optimizer_class.__name__}", (FabricOptimizer, optimizer_class), {})
        _SUBCLASSES[optimizer_class] = subclass
    return subclass


class FabricDataLoader:
    """A data loader set up by ``Fabric``: batches arrive on the device, epochs advance the sampler.

    Args:
        dataloader: The loader to iterate (already given a distributed sampler if needed).
        device: Where batches are moved; ``None`` leaves them where the loader puts them.
        strategy: Moves batches with ``batch_to_device``.
    """

    def __init__(self, dataloader: DataLoader, device: torch.device | None, strategy: Strategy) -> None:
        self._dataloader = dataloader
        self._device = device
        self._strategy = strategy
        self._epoch = 0

    @property
    def device(self) -> torch.device | None:
        """Where batches are moved."""
        return self._device

    @property
    def dataloader(self) -> DataLoader:
        """The wrapped loader."""
        return self._dataloader

    def __len__(self) -> int:
        return len(self._dataloader)

    def __iter__(self) -> Iterator[Any]:
        sampler = getattr(self._dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)  # type: ignore[union-attr]
        self._epoch += 1
        if self._device is None:
            yield from self._dataloader
            return
        to_device = self._strategy.batch_to_device
        for batch in self._dataloader:
            yield to_device(batch, self._device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_dataloader"], name)

    def __repr__(self) -> str:
        return f"FabricDataLoader({self._dataloader!r}, device={self._device})"


def is_wrapped(obj: object) -> bool:
    """Whether ``obj`` is a model, optimizer or data loader returned by ``Fabric.setup*``."""
    return isinstance(obj, (FabricModule, FabricOptimizer, FabricDataLoader))


def unwrap(obj: Any) -> Any:
    """The object the strategy works on: what ``setup`` wrapped, without fabric's wrapper."""
    if isinstance(obj, FabricModule):
        return obj._forward_module
    if isinstance(obj, FabricOptimizer):
        return obj._optimizer
    if isinstance(obj, FabricDataLoader):
        return obj._dataloader
    return obj
