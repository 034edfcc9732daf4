"""Seeding every random number generator a training run uses, data-loader workers included."""

from __future__ import annotations

import logging
import os
import random
from typing import Final

import torch

from fabric_core.utilities.rank_zero import global_rank_from_environment, rank_zero_info

__all__ = ["reset_seed", "seed_everything", "worker_init_function"]

log = logging.getLogger("fabric_core")

SEED_VARIABLE: Final = "FABRIC_GLOBAL_SEED"
"""The seed last given to `seed_everything`, exported for child processes."""
SEED_WORKERS_VARIABLE: Final = "FABRIC_SEED_WORKERS"
"""``"1"`` when `seed_everything` was called with ``workers=True``."""
_MAX_SEED: Final = 2**32 - 1


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's ``random``, NumPy (when installed) and torch on every device.

    Args:
        seed: The seed. When ``None``, ``FABRIC_GLOBAL_SEED`` is used if set, else 0.
        workers: Also seed every data-loader worker: loaders passed to
            ``fabric.setup_dataloaders`` get `worker_init_function` as their
            ``worker_init_fn`` (chained before one the loader already has), which gives each
            worker of each rank its own reproducible seed.
        verbose: Log the seed on global rank 0 (logger ``fabric_core``, INFO).

    Returns:
        The seed used; it is also exported as ``FABRIC_GLOBAL_SEED`` for child processes.

    Raises:
        ValueError: The seed is not an integer in ``[0, 2**32 - 1]``.
    """
    if seed is None:
        seed = int(os.environ.get(SEED_VARIABLE, 0))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed_everything(seed={seed!r}): the seed must be an integer in [0, {_MAX_SEED}].")
    os.environ[SEED_VARIABLE] = str(seed)
    os.environ[SEED_WORKERS_VARIABLE] = str(int(workers))
    _seed_generators(seed)
    if verbose:
        rank_zero_info("Seed set to %d.", seed)
    return seed


def reset_seed() -> None:
    """Seed again with what `seed_everything` was last given (a no-op if it never ran).

    Useful in processes that inherit the environment but not the generators' state.
    """
    seed = os.environ.get(SEED_VARIABLE)
    if seed is None:
        return
    seed_everything(int(seed), workers=os.environ.get(SEED_WORKERS_VARIABLE) == "1", verbose=False)


def seeding_workers() -> bool:
    """Whether `seed_everything` asked for data-loader workers to be seeded."""
    return os.environ.get(SEED_WORKERS_VARIABLE) == "1"


def worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Seed ``random``, NumPy and torch in a data-loader worker, distinctly per rank and worker.

    The seed is derived from the base seed of the loader's iteration (torch's
    ``torch.initial_seed()`` in the worker, itself derived from the main process's
    generator, so it changes every epoch and is reproducible), the worker's id and the
    process's global rank, through NumPy's ``SeedSequence`` when NumPy is installed.

    Args:
        worker_id: The worker's index, as the ``DataLoader`` passes it.
        rank: The global rank; read from the launcher's variables when omitted.
    """
    global_rank = global_rank_from_environment() if rank is None else rank
    base = torch.initial_seed() - worker_id  # torch gives worker i the seed base + i
    entropy = (base & _MAX_SEED, worker_id, global_rank)
    try:
        import numpy
    except ImportError:
        mixed = random.Random(hash(entropy))
        torch_seed, python_seed = mixed.getrandbits(64), mixed.getrandbits(64)
    else:
        sequence = numpy.random.SeedSequence(list(entropy))
        numpy_state, torch_state, python_state = sequence.spawn(3)
        numpy.random.seed(numpy_state.generate_state(4))
        torch_seed = int(torch_state.generate_state(1, dtype=numpy.uint64)[0])
        python_seed = int(python_state.generate_state(2, dtype=numpy.uint64).astype(object).sum())
    torch.manual_seed(torch_seed)
    random.seed(python_seed)


def _seed_generators(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed)
    torch.manual_seed(seed)


pl_worker_init_function = worker_init_function
"""Lightning Fabric's name for `worker_init_function`."""
