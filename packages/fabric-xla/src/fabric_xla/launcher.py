"""Starting one process per XLA device with ``torch_xla.launch``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import torch

from fabric_core.launchers.elastic import is_interactive
from fabric_core.launchers.launcher import Launcher
from fabric_xla._collectives import rendezvous
from fabric_xla._runtime import started_by_torch_xla, started_by_torchelastic, sync, to_cpu

if TYPE_CHECKING:
    from fabric_core.strategies.parallel import ParallelStrategy

__all__ = ["START_METHODS", "XLALauncher", "XLAStartMethod"]

XLAStartMethod = Literal["spawn", "fork"]
START_METHODS: Final = ("spawn", "fork")


class XLALauncher(Launcher):
    """Runs ``fabric.launch(fn)``'s function in one process per XLA device of the host.

    ``torch_xla.launch`` creates the processes (one per TPU chip or core) and the XLA
    runtime connects them; the function runs in each, and global rank 0's return value
    comes back to the launching process (moved to the CPU and pickled). The XLA runtime
    must not have started in the launching process, so create no XLA tensor before
    ``fabric.launch``.

    With one device the function runs in this process, through torch_xla's single-process
    path (which, on a TPU host, restricts the process to one chip). Processes that
    ``torch_xla.launch`` or ``torchrun`` started already run the function directly.

    Args:
        strategy: The strategy whose processes are launched.
        start_method: ``"spawn"`` (fresh interpreters that import the function) or
            ``"fork"`` (copies of this process; the one that works from a notebook).
    """

    def __init__(self, strategy: ParallelStrategy, start_method: XLAStartMethod = "spawn") -> None:
        if start_method not in START_METHODS:
            raise ValueError(
                f"start_method={start_method!r} is not one torch_xla.launch offers; use one of {', '.join(START_METHODS)}."
            )
        self._strategy = strategy
        self.start_method = start_method

    @property
    def is_interactive_compatible(self) -> bool:
        """Only forking works from a notebook or the REPL."""
        return self.start_method == "fork"

    @property
    def needs_launch(self) -> bool:
        """Whether processes are missing: several devices and no launcher started this process."""
        return self._strategy.num_processes > 1 and not (started_by_torch_xla() or started_by_torchelastic())

    @property
    def requires_function(self) -> bool:
        """``torch_xla.launch`` runs a function in its processes; it cannot continue the script."""
        return self.needs_launch

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in every process and return global rank 0's result.

        The result is ``None`` on the other hosts of a TPU pod, where no process has rank 0.

        Raises:
            RuntimeError: ``start_method="spawn"`` was used from a notebook or the REPL.
        """
        if started_by_torch_xla() or started_by_torchelastic():
            return function(*args, **kwargs)
        import torch_xla

        worker = _Worker(function, args, kwargs)
        if self._strategy.num_processes == 1:
            torch_xla.launch(worker, debug_single_process=True)
            return worker.result
        if not self.is_interactive_compatible and is_interactive():
            raise RuntimeError(
                "start_method='spawn' starts fresh interpreters that must import your function, which a "
                "function defined in a notebook or the REPL cannot be. Use XLAStrategy(start_method='fork')."
            )
        with tempfile.TemporaryDirectory(prefix="fabric-xla-") as folder:
            worker.result_file = Path(folder) / "result.pt"
            torch_xla.launch(worker, start_method=self.start_method)
            if not worker.result_file.exists():
                return None
            return torch.load(worker.result_file, weights_only=False)

    def __repr__(self) -> str:
        return f"XLALauncher(start_method={self.start_method!r})"


class _Worker:
    """What each process runs: the function, then rank 0 hands back its result."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.result_file: Path | None = None
        self.result: Any = None

    def __call__(self, rank: int) -> None:
        self.result = self.function(*self.args, **self.kwargs)
        if self.result_file is None:
            return
        if rank == 0:
            sync()
            torch.save(to_cpu(self.result), self.result_file)
        # Leave together: a process that exits while others still run collectives hangs them.
        rendezvous("fabric_xla.launcher.end")
