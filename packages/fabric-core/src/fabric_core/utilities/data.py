"""Giving a data loader a distributed sampler, so each process sees its own shard."""

from __future__ import annotations

import copy
import functools
import inspect
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from fabric_core.utilities.seed import worker_init_function

__all__ = ["DistributedSamplerWrapper", "with_distributed_sampler", "with_worker_seeding"]

_DATALOADER_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "drop_last",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def with_distributed_sampler(
    dataloader: DataLoader, num_replicas: int, rank: int, seed: int = 0
) -> DataLoader:
    """A copy of ``dataloader`` whose sampler gives process ``rank`` its shard of the dataset.

    - A ``RandomSampler`` or ``SequentialSampler`` becomes a ``DistributedSampler``
      (shuffling kept; the shard changes each epoch through ``set_epoch``, which
      ``FabricDataLoader`` calls).
    - Any other sampler (``SubsetRandomSampler``, ``WeightedRandomSampler``, your own) is
      wrapped in a `DistributedSamplerWrapper`: each process takes every
      ``num_replicas``-th index the original sampler yields.
    - A loader that already has a ``DistributedSampler``, or an iterable-style dataset
      (which shards itself), is returned unchanged.

    Raises:
        TypeError: The loader uses a custom batch sampler, or is a subclass whose
            constructor cannot be called again with the same arguments. The message says
            how to shard it yourself.
    """
    sampler = dataloader.sampler
    if isinstance(sampler, DistributedSampler) or isinstance(dataloader.dataset, IterableDataset):
        return dataloader
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        raise TypeError(
            f"This DataLoader uses a custom batch sampler ({type(batch_sampler).__name__}), which fabric cannot "
            "shard across processes for you. Shard it by rank yourself (fabric.world_size, fabric.global_rank) "
            "and call fabric.setup_dataloaders(loader, use_distributed_sampler=False)."
        )
    if type(dataloader) is not DataLoader:
        raise TypeError(
            f"fabric re-creates data loaders to add a distributed sampler, but {type(dataloader).__name__} is a "
            "DataLoader subclass whose arguments it cannot know. Pass a sampler that shards by rank yourself and "
            "call fabric.setup_dataloaders(loader, use_distributed_sampler=False)."
        )
    distributed: Sampler[Any]
    if isinstance(sampler, (RandomSampler, SequentialSampler)):
        distributed = DistributedSampler(
            dataloader.dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=isinstance(sampler, RandomSampler),
            seed=seed,
        )
    else:
        distributed = DistributedSamplerWrapper(sampler, num_replicas=num_replicas, rank=rank, seed=seed)  # type: ignore[arg-type]
    return _rebuild(dataloader, sampler=distributed)


def with_worker_seeding(dataloader: DataLoader, rank: int) -> DataLoader:
    """``dataloader`` with `worker_init_function` run in each worker.

    A ``worker_init_fn`` the loader already has runs after the seeding. A loader without
    workers (``num_workers=0``) is returned unchanged: the main process is seeded already.
    """
    if dataloader.num_workers == 0:
        return dataloader
    seeded = copy.copy(dataloader)
    seeded.worker_init_fn = functools.partial(_seed_then_call, rank, dataloader.worker_init_fn)
    return seeded


class DistributedSamplerWrapper(DistributedSampler):
    """Shards the indices any sampler yields: process ``rank`` takes every ``num_replicas``-th one.

    Every process must draw the same indices before taking its share, so the wrapped
    sampler is iterated with torch's and Python's global generators seeded from
    ``seed + epoch`` (restored afterwards): a random sampler that uses them
    (``SubsetRandomSampler``, ``WeightedRandomSampler``) yields one order on every rank,
    a new one each epoch, reproducibly. Indices are padded by repetition to a multiple of
    ``num_replicas`` so every process runs the same number of steps, as
    ``DistributedSampler`` does.

    Args:
        sampler: The sampler to shard (it must have a length).
        num_replicas: The number of processes.
        rank: This process's rank.
        seed: The base seed of the order (the same on every process).
    """

    def __init__(self, sampler: Sampler[Any], num_replicas: int, rank: int, seed: int = 0) -> None:
        if not isinstance(sampler, Sized):
            raise TypeError(
                f"fabric can shard a custom sampler only when it has a length; {type(sampler).__name__} has none. "
                "Shard it yourself and call fabric.setup_dataloaders(loader, use_distributed_sampler=False)."
            )
        super().__init__(
            _IndexList(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed
        )
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.epoch)
            random.seed(self.seed + self.epoch)
            try:
                indices = list(self.sampler)
            finally:
                random.setstate(python_state)
        if indices and len(indices) < self.total_size:
            repeats = -(-self.total_size // len(indices))
            indices = (indices * repeats)[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


class _IndexList(Dataset):
    """A stand-in dataset of a given length, so ``DistributedSampler`` computes its sizes."""

    def __init__(self, length: int) -> None:
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> int:
        return index


def _seed_then_call(rank: int, user_init: Callable[[int], Any] | None, worker_id: int) -> None:
    worker_init_function(worker_id, rank)
    if user_init is not None:
        user_init(worker_id)


def _rebuild(dataloader: DataLoader, **changes: Any) -> DataLoader:
    kwargs: dict[str, Any] = {
        name: getattr(dataloader, name) for name in _DATALOADER_ARGS if hasattr(dataloader, name)
    }
    kwargs.update(changes)
    accepted = inspect.signature(DataLoader.__init__).parameters
    kwargs = {name: value for name, value in kwargs.items() if name in accepted}
    if dataloader.batch_size is None and dataloader.batch_sampler is None:
        kwargs.pop("drop_last", None)
    return DataLoader(dataloader.dataset, batch_size=dataloader.batch_size, **kwargs)
