"""Doing something on global rank 0 only: printing, logging, warning, and saying a thing once.

The rank is read from the environment variables every launcher sets (``RANK``, then
SLURM's, then MPI's), so these helpers work before ``Fabric`` exists and in code that
never sees it. One process without such variables is rank 0.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = [
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "warn_once",
]

log = logging.getLogger("fabric_core")

_F = TypeVar("_F", bound=Callable[..., Any])
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK")
_said: set[tuple[str, type[Warning]]] = set()
_said_lock = threading.Lock()


def global_rank_from_environment() -> int:
    """This process's global rank as the launcher announced it (0 when nothing did)."""
    for variable in _RANK_VARIABLES:
        value = os.environ.get(variable)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def rank_zero_only(function: _F) -> _F:
    """Decorate ``function`` so that it runs on global rank 0 and returns ``None`` elsewhere.

    The rank can be fixed by assigning ``rank_zero_only.rank`` (``Fabric`` does so once
    its processes exist); until then it is read from the launcher's variables.
    """

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if _current_rank() == 0:
            return function(*args, **kwargs)
        return None

    return cast(_F, wrapped)


def _current_rank() -> int:
    rank = getattr(rank_zero_only, "rank", None)
    return rank if isinstance(rank, int) else global_rank_from_environment()


def rank_zero_warn(
    message: str | Warning, category: type[Warning] = UserWarning, stacklevel: int = 4
) -> None:
    """``warnings.warn`` on global rank 0 only."""
    if _current_rank() == 0:
        warnings.warn(message, category, stacklevel=stacklevel)


def rank_zero_info(message: str, *args: Any) -> None:
    """Log ``message`` at INFO level on global rank 0 only (logger ``fabric_core``)."""
    if _current_rank() == 0:
        log.info(message, *args)


def rank_zero_debug(message: str, *args: Any) -> None:
    """Log ``message`` at DEBUG level on global rank 0 only (logger ``fabric_core``)."""
    if _current_rank() == 0:
        log.debug(message, *args)


def warn_once(message: str, category: type[Warning] = UserWarning, stacklevel: int = 3) -> None:
    """Warn on global rank 0, once per process for each distinct message.

    For a strategy that does the nearest correct thing instead of what the loop asked
    (e.g. synchronising every micro-batch where skipping is impossible): the user hears it
    once, not on every step and every rank.
    """
    key = (message, category)
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    rank_zero_warn(message, category, stacklevel=stacklevel + 1)
