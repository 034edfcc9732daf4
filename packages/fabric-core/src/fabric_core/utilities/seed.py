"""Seeding every random number generator a training run uses."""

from __future__ import annotations

import logging
import os
import random

import torch

log = logging.getLogger("fabric_core")

SEED_VARIABLE = "FABRIC_GLOBAL_SEED"
_MAX_SEED = 2**32 - 1


def seed_everything(seed: int | None = None, workers: bool = False) -> int:
    """Seed Python's ``random``, NumPy (when installed) and torch on every device.

    Args:
        seed: The seed. When ``None``, ``FABRIC_GLOBAL_SEED`` is used if set, else 0.
        workers: Also export ``FABRIC_SEED_WORKERS=1`` so data-loader workers can derive
            their own distinct seeds from it.

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
    os.environ["FABRIC_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed)
    torch.manual_seed(seed)
    log.debug("Seeded every generator with %d.", seed)
    return seed
