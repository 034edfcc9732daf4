"""``LocalSGDStrategy``: replicas train on their own shards and are averaged every few steps."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.strategies import ParallelStrategy
from fabric_core.utilities.collectives import is_distributed
from fabric_core.wrappers import unwrap
from fabric_localsgd._averaging import average_, broadcast_

__all__ = ["LocalSGDStrategy"]


class LocalSGDStrategy(ParallelStrategy):
    """Local SGD (periodic model averaging) on one process per device.

    Every process holds a full replica and trains it on its own shard of the data. Backward
    communicates nothing: gradients stay local. After every ``sync_every`` steps of an
    optimizer, the replicas of what it optimizes are averaged with one all-reduce per
    dtype: the parameters, the floating-point buffers of the set-up modules that own them
    (batch-norm statistics) and, by default, the optimizer's floating-point state
    (momentum, Adam moments), so the replicas are identical right after an averaging step.
    Traffic is one model-sized all-reduce every ``sync_every`` steps instead of DDP's one
    per step; memory per process is that of single-device training.

    With ``sync_every=1`` and SGD (with or without momentum) this is exactly data-parallel
    training on the global batch. Saving a checkpoint averages the saved models and
    optimizers first, so the file holds the consensus whatever step it is taken at.

    Args:
        sync_every: Optimizer steps between two averagings.
        average_optimizer_state: Also average the optimizer's floating-point state.
        **kwargs: Passed to `fabric_core.strategies.ParallelStrategy` (``accelerator``,
            ``parallel_devices``, ``cluster_environment``, ``checkpoint_io``, ``precision``,
            ``process_group_backend``, ``timeout``, ``start_method``).

    Raises:
        ValueError: ``sync_every`` is not a positive integer.
    """

    def __init__(self, sync_every: int = 4, average_optimizer_state: bool = True, **kwargs: Any) -> None:
        if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"sync_every={sync_every!r} must be a positive number of optimizer steps.")
        super().__init__(**kwargs)
        self.sync_every = sync_every
        self.average_optimizer_state = average_optimizer_state
        # Set-up order matters: every process must average the same tensors in the same order.
        self._modules: list[weakref.ref[nn.Module]] = []
        self._steps: weakref.WeakKeyDictionary[Optimizer, int] = weakref.WeakKeyDictionary()

    def local_steps(self, optimizer: Optimizer) -> int:
        """Steps of ``optimizer`` since its replicas were last averaged."""
        return self._steps.get(unwrap(optimizer), 0)

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move the module to this process's device and give every replica rank 0's weights."""
        module = super().setup_module(module)
        if is_distributed():
            broadcast_([*module.parameters(), *module.buffers()], src=0)
        if not any(reference() is module for reference in self._modules):
            self._modules.append(weakref.ref(module))
        return module

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step this replica's optimizer; average the replicas every ``sync_every`` steps."""
        result = super().optimizer_step(optimizer, **kwargs)
        self._steps[optimizer] = self._steps.get(optimizer, 0) + 1
        if self._steps[optimizer] >= self.sync_every:
            self.synchronize(optimizer)
        return result

    def synchronize(self, *objects: nn.Module | Optimizer) -> None:
        """Average the replicas of the given models and optimizers now (every process must call it).

        An optimizer brings its parameters, its state and the buffers of the set-up modules
        that own those parameters; a model brings its parameters and buffers.
        """
        tensors: list[torch.Tensor] = []
        for obj in map(unwrap, objects):
            if isinstance(obj, Optimizer):
                tensors += self._optimizer_tensors(obj)
                self._steps[obj] = 0
            elif isinstance(obj, nn.Module):
                tensors += [*obj.parameters(), *_float_buffers(obj)]
        if tensors and is_distributed():
            average_(tensors)

    def _optimizer_tensors(self, optimizer: Optimizer) -> Iterator[torch.Tensor]:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        yield from parameters
        owned = {id(p) for p in parameters}
        for reference in self._modules:
            module = reference()
            if module is not None and any(id(p) in owned for p in module.parameters()):
                yield from _float_buffers(module)
        if self.average_optimizer_state:
            for parameter in parameters:
                state = optimizer.state.get(parameter, {})
                for key in sorted(state):
                    value = state[key]
                    if key != "step" and isinstance(value, torch.Tensor) and value.is_floating_point():
                        yield value

    def save_checkpoint(self, path: str | Path, state: dict[str, Any], **kwargs: Any) -> None:
        """Average the models and optimizers in ``state``, then save the consensus from rank 0."""
        self.synchronize(*(value for value in state.values() if isinstance(value, (nn.Module, Optimizer))))
        super().save_checkpoint(path, state, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled when spawned processes receive the strategy; what it tracks stays behind.
        state = dict(self.__dict__)
        state["_modules"], state["_steps"] = [], None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._steps = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"LocalSGDStrategy(sync_every={self.sync_every}, precision={self._precision!r})"


def _float_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [buffer for buffer in module.buffers() if buffer.is_floating_point()]
