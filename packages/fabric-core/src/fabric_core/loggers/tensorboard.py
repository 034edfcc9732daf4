"""``TensorBoardLogger``: metrics as TensorBoard event files, through ``torch.utils.tensorboard``.

Needs the optional ``tensorboard`` package: ``pip install 'fabric-core[tensorboard]'``.
It is imported when a ``TensorBoardLogger`` is built, not when this module is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fabric_core.loggers._shared import FolderLogger, flatten, hyperparameters
from fabric_core.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardLogger"]

_INSTALL_HINT = "pip install 'fabric-core[tensorboard]'"


class TensorBoardLogger(FolderLogger):
    """Write metrics as TensorBoard events into ``save_dir/name/version_N``, from global rank 0 only.

    Open them with ``tensorboard --logdir <save_dir>``. Example::

        from fabric_core import Fabric
        from fabric_core.loggers import TensorBoardLogger

        logger = TensorBoardLogger("logs", name="digits")
        fabric = Fabric(accelerator="cpu", loggers=logger)
        fabric.log("loss", 0.5, step=0)
        logger.finalize("success")

    ``logger.experiment`` is the ``torch.utils.tensorboard.SummaryWriter`` (for images,
    histograms, graphs); on other ranks it is an object whose every method does nothing,
    so ``logger.experiment.add_image(...)`` may run everywhere.

    Args:
        save_dir: The folder to write into.
        name: The experiment's folder under ``save_dir`` (Lightning's default,
            ``"lightning_logs"``); ``""`` or ``None`` writes the versions directly into it.
        version: An ``int`` writes into ``version_<int>``, a string into a folder of that
            name; ``None`` (default) takes the next free ``version_N``.
        default_hp_metric: When `log_hyperparams` gets no ``metrics``, log
            ``hp_metric = -1`` so that TensorBoard's HPARAMS tab shows the run (as Lightning).
        prefix: Put before every metric name, joined with ``-``.
        sub_dir: A folder inside the version folder to write the events into.
        root_dir: Lightning Fabric's name for ``save_dir`` (keyword only).
        **kwargs: Passed to ``SummaryWriter`` (e.g. ``flush_secs=30``, ``max_queue=10``).

    Raises:
        ModuleNotFoundError: The ``tensorboard`` package is not installed.
        TypeError: No folder, or both ``save_dir`` and ``root_dir``.
    """

    def __init__(
        self,
        save_dir: str | Path | None = None,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | Path | None = None,
        *,
        root_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        self._writer_class = summary_writer_class()
        super().__init__("TensorBoardLogger", save_dir, name, version, prefix, root_dir)
        self._default_hp_metric = default_hp_metric
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._writer_kwargs = kwargs
        self._writer: SummaryWriter | None = None

    @property
    def log_dir(self) -> str:
        """``save_dir/name/version_N`` (and ``sub_dir``): where the event files go."""
        folder = super().log_dir
        return os.path.join(folder, self._sub_dir) if self._sub_dir else folder

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter`` on global rank 0 (made on first use); elsewhere a do-nothing stand-in."""
        if self._writer is not None:
            return self._writer
        if not _on_rank_zero():
            return _NoExperiment()
        self._writer = self._writer_class(log_dir=self.log_dir, **self._writer_kwargs)
        return self._writer

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Add a scalar event per metric at ``step``; nested dicts become ``outer/inner`` tags.

        Raises:
            ValueError: A value is not a number or a one-element tensor.
        """
        writer = self.experiment
        for tag, value in self.metric_values(metrics).items():
            writer.add_scalar(tag, value, global_step=step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None) -> None:
        """Show ``params`` in TensorBoard's HPARAMS tab and write them to ``hparams.yaml`` (or ``.json``).

        Args:
            params: A dict, an ``argparse.Namespace`` or a dataclass instance; nested dicts
                become ``outer/inner`` names; values TensorBoard cannot show are shown as text.
            metrics: Metrics to show beside them (e.g. ``{"val/loss": 0.3}``); without them,
                ``hp_metric = -1`` when ``default_hp_metric`` is on.
        """
        from torch.utils.tensorboard.summary import hparams

        values = hyperparameters("TensorBoardLogger", params)
        self.write_hparams_file(values)
        shown = {name: _shown(value) for name, value in flatten(values).items()}
        if metrics is None and self._default_hp_metric:
            metrics = {"hp_metric": -1}
        scalars = self.metric_values(metrics or {})
        if scalars:
            self.log_metrics(scalars, step=0)
        file_writer = self.experiment._get_file_writer()
        for summary in hparams(shown, scalars):
            file_writer.add_summary(summary)

    @rank_zero_only
    def save(self) -> None:
        """Write the queued events to disk."""
        if self._writer is not None:
            self._writer.flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write the queued events and close the event file (a later log opens a new one)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"TensorBoardLogger(save_dir={self.save_dir!r}, name={self.name!r}, version={self._version!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A SummaryWriter holds a thread and a file: a pickled logger makes a new one on use.
        state = dict(self.__dict__)
        state["_writer"] = None
        return state


def summary_writer_class() -> type[SummaryWriter]:
    """``torch.utils.tensorboard.SummaryWriter``, imported now.

    Raises:
        ModuleNotFoundError: The ``tensorboard`` package is missing (or too old for torch).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ModuleNotFoundError(
            f"TensorBoardLogger needs the tensorboard package, which torch.utils.tensorboard could not "
            f"import ({error}). Install it with: {_INSTALL_HINT}",
            name="tensorboard",
        ) from None
    return SummaryWriter


@rank_zero_only
def _on_rank_zero() -> bool:
    return True  # None elsewhere


def _shown(value: Any) -> int | float | str | bool | torch.Tensor:
    """A hyperparameter as a type TensorBoard's HPARAMS tab takes (others as text)."""
    if isinstance(value, (bool, int, float, str)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value
    return str(value)


class _NoExperiment:
    """Stands in for the ``SummaryWriter`` on ranks other than 0: every method does nothing."""

    def __getattr__(self, name: str) -> Any:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None
