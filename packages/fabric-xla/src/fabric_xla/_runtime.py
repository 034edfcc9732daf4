"""Small doors into torch_xla, each importing it only when called.

Every module of fabric-xla goes through these (or imports torch_xla inside a function),
so importing the package, registering its names and listing them never loads torch_xla.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Final

import torch

from fabric_core.utilities.apply_func import apply_to_tensors

__all__ = [
    "explained_backward_errors",
    "import_torch_xla",
    "is_installed",
    "missing_torch_xla",
    "started_by_torch_xla",
    "started_by_torchelastic",
    "sync",
    "to_cpu",
    "xla_device",
]

WORKER_VARIABLE: Final = "PJRT_LOCAL_PROCESS_RANK"
"""Set by torch_xla in every process that ``torch_xla.launch`` started."""


def is_installed() -> bool:
    """Whether torch_xla can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch_xla") is not None


def missing_torch_xla() -> str:
    """The message for an XLA device asked for where torch_xla is not installed.

    It names the install command for the torch release of this environment (torch_xla
    works only with the torch release of its own version) and the CPU alternative.
    """
    release = torch.__version__.split("+")[0]
    return (
        "The XLA accelerator (accelerator='tpu' or 'xla', which every XLA strategy runs on) needs torch_xla, which is not "
        f"installed. torch_xla works only with the torch release of its own version; for torch {release} "
        f"install it with: pip install torch_xla=={release} (on a TPU host: pip install 'torch_xla[tpu]=={release}'). "
        "To train without XLA, use Fabric(accelerator='cpu') instead."
    )


def import_torch_xla() -> ModuleType:
    """Import torch_xla, explaining the usual cause when its compiled part does not load.

    Raises:
        ModuleNotFoundError: torch_xla is not installed (the message says how to install it).
        ImportError: torch_xla was built for another torch release.
    """
    try:
        import torch_xla
    except ImportError as error:
        if not is_installed():
            raise ModuleNotFoundError(missing_torch_xla(), name="torch_xla") from error
        from importlib.metadata import version

        wanted = version("torch_xla")
        raise ImportError(
            f"torch_xla {wanted} cannot be loaded with torch {torch.__version__} ({error}). torch_xla works only "
            f"with the torch release of its own version: pip install torch=={wanted} torch_xla=={wanted}"
        ) from error
    return torch_xla


def started_by_torch_xla() -> bool:
    """Whether this process is a worker that ``torch_xla.launch`` started."""
    return WORKER_VARIABLE in os.environ


def started_by_torchelastic() -> bool:
    """Whether torchrun (the elastic agent) started this process; torch_xla then reads its variables."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def xla_device() -> torch.device:
    """This process's XLA device (in SPMD mode, the virtual device that spans all of them)."""
    import torch_xla

    return torch_xla.device()


@contextmanager
def explained_backward_errors() -> Iterator[None]:
    """Re-raise the cryptic error of a backward pass on XLA that autograd cannot route, with its cause.

    PyTorch's autograd engine counts each device type's devices at its first backward pass;
    XLA's devices count only once the XLA runtime has started. A backward pass on the CPU
    before that leaves autograd without a queue for the XLA device.
    """
    try:
        yield
    except RuntimeError as error:
        if "device_ready_queues_" not in str(error):
            raise
        raise RuntimeError(
            "This process ran a backward pass before the XLA runtime started, so PyTorch's autograd engine "
            "does not know the XLA device (a torch_xla limitation). Call fabric.launch() or fabric.setup(...) "
            "before any other backward pass in the process, or start the runtime first with torch_xla.device()."
        ) from error


def sync() -> None:
    """Cut the lazily recorded graph here: compile it (once per distinct graph) and run it.

    This is ``torch_xla.sync()`` (formerly ``xm.mark_step()``). Without it the graph grows
    with every operation until something reads a value.
    """
    import torch_xla

    step = getattr(torch_xla, "sync", None)
    if step is None:  # older torch_xla
        import torch_xla.core.xla_model as xm

        step = xm.mark_step
    step()


def to_cpu(data: Any) -> Any:
    """A copy of ``data`` with every XLA tensor moved to the CPU (other objects are kept).

    Call `sync` first, so each transfer copies a computed value instead of running
    its own graph.
    """
    return apply_to_tensors(data, lambda tensor: tensor.cpu() if tensor.device.type == "xla" else tensor)
