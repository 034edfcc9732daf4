"""Giving a data loader a distributed sampler, so each process sees its own shard."""

from __future__ import annotations

import inspect
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

__all__ = ["with_distributed_sampler"]

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

    Shuffling is kept when the original loader shuffled (a ``RandomSampler``); the shard
    changes each epoch through ``set_epoch``, which ``FabricDataLoader`` calls. A loader
    that already has a ``DistributedSampler``, or an iterable-style dataset (which
    shards itself), is returned unchanged.

    Raises:
        TypeError: The loader uses a custom sampler or batch sampler, or is a subclass
            whose constructor cannot be called again with the same arguments. The message
            says how to shard it yourself.
    """
    sampler = dataloader.sampler
    if isinstance(sampler, DistributedSampler) or isinstance(dataloader.dataset, IterableDataset):
        return dataloader
    batch_sampler = dataloader.batch_sampler
    if not isinstance(sampler, (RandomSampler, SequentialSampler)) or (
        batch_sampler is not None and type(batch_sampler).__name__ != "BatchSampler"
    ):
        raise TypeError(
            f"This DataLoader uses a custom sampler ({type(sampler).__name__}) or batch sampler, which fabric cannot "
            "shard across processes for you. Give it a sampler that shards by rank (e.g. torch.utils.data."
            "DistributedSampler(dataset, num_replicas=fabric.world_size, rank=fabric.global_rank)) and call "
            "fabric.setup_dataloaders(loader, use_distributed_sampler=False)."
        )
    distributed: DistributedSampler[Any] = DistributedSampler(
        dataloader.dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=isinstance(sampler, RandomSampler),
        seed=seed,
    )
    kwargs: dict[str, Any] = {
        name: getattr(dataloader, name) for name in _DATALOADER_ARGS if hasattr(dataloader, name)
    }
    accepted = inspect.signature(DataLoader.__init__).parameters
    kwargs = {name: value for name, value in kwargs.items() if name in accepted}
    if type(dataloader) is not DataLoader:
        raise TypeError(
            f"fabric re-creates data loaders to add a distributed sampler, but {type(dataloader).__name__} is a "
            "DataLoader subclass whose arguments it cannot know. Pass a sampler that shards by rank yourself and "
            "call fabric.setup_dataloaders(loader, use_distributed_sampler=False)."
        )
    return DataLoader(
        dataloader.dataset,
        batch_size=dataloader.batch_size,
        sampler=distributed,
        **kwargs,
    )
