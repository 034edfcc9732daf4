"""The base class of fabric-core's loggers, and what ``Fabric(loggers=...)`` asks of a logger.

A logger needs one method: ``log_metrics(metrics, step)``. ``Fabric`` takes any object
that has it (duck typing); subclassing `Logger` adds the optional methods with
do-nothing defaults, so a loop can call ``log_hyperparams`` and ``finalize`` on every
logger it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

__all__ = ["Logger"]


class Logger(ABC):
    """A place metrics go: a file, a dashboard, a service.

    Subclasses implement `log_metrics`; everything else is optional. Example::

        from fabric_core import Fabric
        from fabric_core.loggers import Logger


        class PrintLogger(Logger):
            def log_metrics(self, metrics, step=None):
                print(step, metrics)


        fabric = Fabric(accelerator="cpu", loggers=PrintLogger())
        fabric.log("loss", 0.5, step=0)  # prints: 0 {'loss': 0.5}

    ``Fabric`` calls ``log_metrics`` in every process; a logger that writes files writes
    from global rank 0 only (as `CSVLogger` and
    `TensorBoardLogger` do).
    """

    @property
    def name(self) -> str | None:
        """The experiment's name (a folder under `save_dir` for file loggers), or ``None``."""
        return None

    @property
    def version(self) -> int | str | None:
        """The run's version within the experiment, or ``None``."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The folder the logger was given, or ``None`` for loggers that write no files."""
        return None

    @property
    def root_dir(self) -> str | None:
        """The experiment's folder, ``save_dir/name``, or ``None``."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The run's folder, ``save_dir/name/version_N``, or ``None``."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` (names to numbers) at ``step``."""

    def log_hyperparams(self, params: Any) -> None:
        """Record the run's hyperparameters (a dict, an ``argparse.Namespace`` or a dataclass).

        The base class ignores them.
        """

    def save(self) -> None:
        """Write out whatever is buffered. The base class has nothing to write."""

    def finalize(self, status: str = "success") -> None:
        """Flush and close at the end of the run; ``status`` is ``"success"``, ``"failed"``, ...

        The base class calls `save`.
        """
        self.save()
