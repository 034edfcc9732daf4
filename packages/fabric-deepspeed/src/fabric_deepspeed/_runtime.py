"""Importing deepspeed for a run: which accelerator it picks, which ops it compiles, how loud it is.

deepspeed chooses its accelerator once, when it is imported, from ``DS_ACCELERATOR`` or by
probing the machine. A CPU run therefore exports ``DS_ACCELERATOR=cpu`` before the first
import (unless the user set the variable), so a machine with GPUs still runs DeepSpeed on
the CPU when ``Fabric(accelerator="cpu")`` says so. On the CPU accelerator DeepSpeed talks
over gloo and needs neither oneCCL nor the Intel extension.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Final

__all__ = ["ACCELERATOR_VARIABLE", "accelerator_variable", "import_deepspeed"]

ACCELERATOR_VARIABLE: Final = "DS_ACCELERATOR"
"""The environment variable deepspeed reads to choose its accelerator."""

_DEPRECATED_COLLECTIVES: Final = (
    r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"
)

SHM_COMM_OP: Final = "deepspeed_shm_comm"
"""deepspeed's shared-memory all-reduce op for CPU runs, compiled on first use (about 80 s)."""


def accelerator_variable(device_type: str, environ: Mapping[str, str]) -> str | None:
    """The value to export as ``DS_ACCELERATOR`` before importing deepspeed, or ``None`` to leave it.

    Raises:
        RuntimeError: The user set ``DS_ACCELERATOR`` to another device type than the run's.
    """
    given = environ.get(ACCELERATOR_VARIABLE)
    if given:
        if (given == "cpu") != (device_type == "cpu"):
            raise RuntimeError(
                f"{ACCELERATOR_VARIABLE}={given} is set, but Fabric runs DeepSpeed on accelerator='{device_type}'. "
                f"Unset {ACCELERATOR_VARIABLE} or make it match."
            )
        return None
    return "cpu" if device_type == "cpu" else None


def import_deepspeed(device_type: str, logging_level: int) -> ModuleType:
    """Import deepspeed for a run on ``device_type`` and return the module.

    Exports ``DS_ACCELERATOR=cpu`` first for CPU runs, checks that an earlier import chose
    the same kind of device, keeps the shared-memory comm op from being compiled on the CPU
    and sets deepspeed's log level. torch's deprecation warnings for the two collectives
    deepspeed calls on every step (``all_gather_into_tensor``, ``reduce_scatter_tensor``)
    are silenced: they repeat each step and only a deepspeed release can act on them.

    Raises:
        RuntimeError: deepspeed was imported earlier and chose another accelerator.
    """
    value = accelerator_variable(device_type, os.environ)
    imported_before = "deepspeed" in sys.modules
    if value is not None and not imported_before:
        os.environ[ACCELERATOR_VARIABLE] = value
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    chosen = get_accelerator().device_name()
    if (chosen == "cpu") != (device_type == "cpu"):
        raise RuntimeError(
            f"deepspeed was imported before fabric set it up and chose the '{chosen}' accelerator, but Fabric runs "
            f"on accelerator='{device_type}'. Set {ACCELERATOR_VARIABLE}={device_type} before importing deepspeed, "
            "or import it after building the Fabric."
        )
    if chosen == "cpu":
        _skip_shm_comm_op()
    deepspeed.utils.logging.logger.setLevel(logging_level)
    warnings.filterwarnings("ignore", message=_DEPRECATED_COLLECTIVES, category=FutureWarning)
    return deepspeed


def _skip_shm_comm_op() -> None:
    """Keep deepspeed from compiling its shared-memory comm op, which training never calls.

    deepspeed builds the op whenever its communication backend starts on the CPU, but only
    ``deepspeed.comm.inference_all_reduce`` uses it; the training collectives go through
    ``torch.distributed`` (gloo). Marking the op incompatible makes deepspeed fall back to
    gloo at once instead of compiling for about 80 s. An op installed precompiled
    (``DS_BUILD_SHM_COMM=1``) costs nothing and is left alone.
    """
    import deepspeed.ops
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get(SHM_COMM_OP, False):
        return
    try:
        compatible = deepspeed.ops.__compatible_ops__
    except AttributeError:  # a deepspeed without the op probe
        return
    compatible[SHM_COMM_OP] = False
