"""What FSDPStrategy and ModelParallelStrategy share: a module becomes DTensor shards in place.

Subclasses say how a module is sharded (`ShardedStrategy._parallelize`) and whether
checkpoints are sharded; this base class handles the rest of a sharded module's life:
meta-device creation and materialisation, re-pointing optimizers at the shards, skipping
gradient synchronisation, clipping sharded gradients, and checkpoints.
"""

from __future__ import annotations

import sys
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer
from torch.utils.weak import WeakIdKeyDictionary

from fabric_core.io.dcp import AsyncSaver
from fabric_core.io.optimizer_state import module_in_state
from fabric_core.strategies.parallel import ParallelStrategy
from fabric_core.utilities.optimizer import ParameterSlots
from fabric_fsdp import _checkpoint, _clip
from fabric_fsdp._params import has_meta_tensors, materialize, rebind_optimizer, warn_uninitialised

if TYPE_CHECKING:
    from fabric_core.utilities.memory_layout import MemoryEstimate

__all__ = ["ShardedStrategy"]


class ShardedStrategy(ParallelStrategy, ABC):
    """A multi-process strategy whose modules hold DTensor shards (set up in place)."""

    allows_repeated_setup: ClassVar[bool] = False
    """Sharding replaces a module's parameters in place: sharding them again is refused."""

    _sharded_checkpoints: bool = True

    def __init__(self, async_save: bool = False, **kwargs: Any) -> None:
        if not isinstance(async_save, bool):
            raise TypeError(f"{type(self).__name__}(async_save={async_save!r}) must be True or False.")
        super().__init__(**kwargs)
        self._async_saver = AsyncSaver() if async_save else None
        self._replacements = WeakIdKeyDictionary()
        self._modules: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled when spawned processes receive the strategy: leave the per-process state behind.
        state = dict(self.__dict__)
        state["_replacements"] = None
        state["_modules"] = None
        if "_device_mesh" in state:
            state["_device_mesh"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._replacements = WeakIdKeyDictionary()
        self._modules = weakref.WeakSet()

    @abstractmethod
    def _parallelize(self, module: nn.Module) -> nn.Module:
        """Shard ``module`` (in place, or return the module to train)."""

    def _materialize_device(self) -> torch.device:
        """Where a meta-device module's local shards are allocated."""
        return self.root_device

    # -- modules and optimizers ---------------------------------------------------------

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Shard ``module`` and return it (the same object, now holding DTensor shards).

        A module built under ``fabric.init_module(empty_init=True)`` is on the meta device:
        it is sharded first and only the local shards are then allocated and initialised
        (see `module_init_context`). The parameters that sharding replaced are
        remembered, so optimizers built before this call are re-pointed at the shards by
        `setup_optimizer`.

        A ``torch.compile``-d module is sharded inside (its ``_orig_mod``) and returned
        compiled: compilation traces on the first call, after sharding. The sharded module
        itself has no wrapper around it, so compiling it after this call works as well.

        Raises:
            TypeError: ``module`` holds FSDP1 ``FullyShardedDataParallel`` wrappers.
        """
        _refuse_fsdp1(module)
        compiled = _compiled(module)
        if compiled is not None:
            module = compiled._orig_mod
        slots = ParameterSlots(module)
        module = self._parallelize(module)
        self._replacements.update(slots.replacements())
        if has_meta_tensors(module):
            warn_uninitialised(materialize(module, self._materialize_device()))
        self._modules.add(module)
        if compiled is not None and module is compiled._orig_mod:
            return compiled
        return module

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Return ``optimizer``, re-pointed at the shards of parameters it was built over.

        Rule: an optimizer may be created before or after its model is set up, but it must
        not have stepped (or loaded state) before ``fabric.setup``: that state belongs to
        full tensors, not to shards. Load optimizer state afterwards with ``fabric.load``.

        Raises:
            ValueError: The optimizer holds state for a replaced parameter, or trains
                meta-device parameters of a model that was not set up.
        """
        rebind_optimizer(optimizer, self._replacements)
        return optimizer

    def module_to_device(self, module: nn.Module) -> None:
        """Move the module to the root device, unless it is on the meta device (it is materialised in setup)."""
        if not has_meta_tensors(module):
            module.to(self.root_device)

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[Any]:
        """A context for creating a model; with ``empty_init=True`` it is created on the meta device.

        On the meta device nothing is allocated and no initialiser runs, so a model larger
        than one device fits. ``fabric.setup`` then shards it and allocates only this
        process's shards, initialised by each submodule's ``reset_parameters()`` (or loaded
        from a checkpoint afterwards).
        """
        if not empty_init:
            return super().module_init_context(empty_init)
        stack = ExitStack()
        stack.enter_context(torch.device("meta"))
        stack.enter_context(self.precision.module_init_context())
        return stack

    def estimate_memory(self, module: nn.Module, optimizer: str) -> MemoryEstimate:
        """Per-rank bytes of parameters, gradients and optimizer state once sharded (see `fabric_fsdp._estimate`)."""
        from fabric_fsdp._estimate import estimate_sharded

        return estimate_sharded(self, module, optimizer)

    # -- training step ------------------------------------------------------------------

    @contextmanager
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> Iterator[None]:
        """Skip the gradient reduce-scatter (and all-reduce) in backward passes inside the block.

        Gradients accumulate *unsharded* on every process until the first backward outside
        the block reduces them: memory for gradients grows from a shard to the full size of
        every sharded module for the duration. Without FSDP-sharded modules (tensor parallel
        only) there is no gradient synchronisation to skip.
        """
        sharded = [m for m in module.modules() if isinstance(m, FSDPModule)] if enabled else []
        for fsdp_module in sharded:
            fsdp_module.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for fsdp_module in sharded:
                fsdp_module.set_requires_gradient_sync(True, recurse=False)

    # Same parameters as Strategy.clip_gradients_norm (the contract every strategy keeps); only the body is its own.
    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Clip sharded gradients by their joint norm (computed over all shards; one all-reduce per mesh)."""
        self.precision.unscale_gradients(optimizer)
        if getattr(self.precision, "scaler", None) is not None:
            error_if_nonfinite = False
        return _clip.clip_grad_norm(
            _parameters(optimizer), max_norm, norm_type, error_if_nonfinite, across=self._clip_across()
        )

    def _clip_across(self) -> Any:
        """A process group whose members hold different parameters (pipeline stages), or ``None``."""
        return None

    def clip_gradients_value(self, module: nn.Module, optimizer: Optimizer, clip_val: float) -> None:
        """Clamp every gradient element, shard by shard (no communication)."""
        self.precision.unscale_gradients(optimizer)
        _clip.clip_grad_value(_parameters(optimizer), clip_val)

    # -- checkpoints --------------------------------------------------------------------

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load a full state dict (or one of DTensor shards) into a sharded module."""
        _reshard(module)
        if any(isinstance(value, DTensor) for value in state_dict.values()):
            module.load_state_dict(state_dict, strict=strict)
        else:
            _checkpoint.load_full_module(module, state_dict, strict)

    # Same parameters as Strategy.save_checkpoint (the contract every strategy keeps); only the body is its own.
    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Save ``state``: a sharded DCP directory, or one full file from rank 0.

        Every process must call it (gathering and writing shards are collective). See
        `fabric_fsdp.checkpoint` for the layouts.

        Raises:
            TypeError: ``storage_options`` was given, or an optimizer's model is not in
                ``state`` and was not set up by this strategy.
        """
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        if not self._sharded_checkpoints:
            _checkpoint.save_full(self, path, state, filter, self._module_for)
        elif self._async_saver is not None:
            self._async_saver.save(self, path, state, filter, self._module_for)
        else:
            _checkpoint.save_sharded(self, path, state, filter, self._module_for)

    def wait_for_checkpoint(self) -> None:
        """Block until the asynchronous save in flight (``async_save=True``) is complete; a no-op otherwise.

        ``fabric.load`` and `teardown` call it; call it yourself before reading a
        checkpoint with something other than fabric.
        """
        if self._async_saver is not None:
            self._async_saver.wait()
            self.barrier()  # rank 0 has given the directory its name

    def teardown(self) -> None:
        """Finish the save in flight, then release what the strategy holds."""
        if self._async_saver is not None:
            self._async_saver.wait()
        super().teardown()

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load a checkpoint, whichever layout it has, into ``state`` in place.

        A DCP directory is read shard by shard at any number of processes (each reads the
        slices of its own shards); a single file is read whole by every process, which then
        keeps its shards. Entries not named in ``state`` are returned with full tensors.
        """
        self.wait_for_checkpoint()
        # After a forward without backward, gathered parameters may still be registered.
        for value in state.values() if isinstance(state, dict) else [state]:
            if isinstance(value, nn.Module):
                _reshard(value)
        return _checkpoint.load_checkpoint(self, path, state, strict, weights_only, self._module_for)

    def _module_for(self, optimizer: Optimizer, state: dict[str, Any]) -> nn.Module:
        for module in [obj for obj in state.values() if isinstance(obj, nn.Module)] + list(self._modules):
            _reshard(module)  # after a forward without backward, gathered parameters may still be registered
        return module_in_state(optimizer, state, self._modules)


def _parameters(optimizer: Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _reshard(module: nn.Module) -> None:
    for submodule in module.modules():
        if isinstance(submodule, FSDPModule):
            submodule.reshard()


def _compiled(module: nn.Module) -> Any:
    """``module`` if it is ``torch.compile``'s wrapper (``OptimizedModule``), else ``None``."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled
    if eval_frame is not None and isinstance(module, eval_frame.OptimizedModule):
        return module
    return None


def _refuse_fsdp1(module: nn.Module) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
        raise TypeError(
            "The model holds torch.distributed.fsdp.FullyShardedDataParallel (FSDP1) wrappers. This strategy shards "
            "with FSDP2's fully_shard: pass the plain model and let the strategy shard it."
        )
