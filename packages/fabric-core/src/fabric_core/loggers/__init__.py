"""Loggers that ``fabric.log`` and ``fabric.log_dict`` write to.

Importable as from ``lightning.fabric.loggers``::

    from fabric_core.loggers import CSVLogger, TensorBoardLogger

Pass them to ``Fabric(loggers=...)``. Any object with a ``log_metrics(metrics, step)``
method works as a logger too; `Logger` is the base class of the shipped ones.
Each name is imported on first access (``TensorBoardLogger`` needs the optional
``tensorboard`` package: ``pip install 'fabric-core[tensorboard]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.lazy import lazy_exports

if TYPE_CHECKING:
    from fabric_core.loggers.csv_logs import CSVLogger
    from fabric_core.loggers.logger import Logger
    from fabric_core.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CSVLogger": "fabric_core.loggers.csv_logs",
        "Logger": "fabric_core.loggers.logger",
        "TensorBoardLogger": "fabric_core.loggers.tensorboard",
    },
)
