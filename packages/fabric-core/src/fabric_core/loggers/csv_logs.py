"""``CSVLogger``: metrics into a ``metrics.csv`` any spreadsheet or ``pandas.read_csv`` opens."""

from __future__ import annotations

import csv
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fabric_core.loggers._shared import FolderLogger, hyperparameters, number
from fabric_core.utilities.rank_zero import rank_zero_only

__all__ = ["CSVLogger"]


class CSVLogger(FolderLogger):
    """Write metrics to ``save_dir/name/version_N/metrics.csv``, from global rank 0 only.

    The file has a ``step`` column and one column per metric name; a row per
    ``log_metrics`` call (``fabric.log``/``fabric.log_dict``), empty where a metric was not
    logged in that call. Example::

        from fabric_core import Fabric
        from fabric_core.loggers import CSVLogger

        logger = CSVLogger("logs", name="digits")  # logs/digits/version_0, then version_1, ...
        fabric = Fabric(accelerator="cpu", loggers=logger)
        fabric.log_dict({"loss": 0.5, "lr": 0.1}, step=0)
        logger.finalize("success")
        print(open(f"{logger.log_dir}/metrics.csv").read())  # step,loss,lr / 0,0.5,0.1

    Rows are kept in memory and written every ``flush_logs_every_n_steps`` calls, on
    `save` and `finalize`, when the logger is garbage-collected, and when the
    interpreter exits (also after an uncaught exception), so a crash that kills the
    process outright loses at most the rows not yet written. Rows are appended to the
    file; when a metric name appears that the file has no column for, the file is
    rewritten with the wider header (into a temporary file that then replaces it, so it
    is never half-written). A run given an existing ``version`` continues that run's file.

    `log_hyperparams` writes ``hparams.yaml`` next to it when PyYAML is installed,
    else ``hparams.json``.

    Args:
        save_dir: The folder to write into.
        name: The experiment's folder under ``save_dir`` (Lightning's default,
            ``"lightning_logs"``); ``""`` or ``None`` writes the versions directly into it.
        version: An ``int`` writes into ``version_<int>``, a string into a folder of that
            name; ``None`` (default) takes the next free ``version_N``.
        prefix: Put before every metric name, joined with ``-`` (``"train"`` gives
            ``train-loss``).
        flush_logs_every_n_steps: Write the buffered rows every this many
            ``log_metrics`` calls.
        root_dir: Lightning Fabric's name for ``save_dir`` (keyword only).

    Raises:
        TypeError: No folder, or both ``save_dir`` and ``root_dir``.
        ValueError: ``flush_logs_every_n_steps`` is not a positive integer.
    """

    def __init__(
        self,
        save_dir: str | Path | None = None,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        *,
        root_dir: str | Path | None = None,
    ) -> None:
        super().__init__("CSVLogger", save_dir, name, version, prefix, root_dir)
        if (
            isinstance(flush_logs_every_n_steps, bool)
            or not isinstance(flush_logs_every_n_steps, int)
            or flush_logs_every_n_steps < 1
        ):
            raise ValueError(
                f"CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps!r}) must be a positive integer "
                "(1 writes every row at once)."
            )
        self._flush_every = flush_logs_every_n_steps
        self._file: _MetricsFile | None = None

    @property
    def metrics_file_path(self) -> str:
        """The path of this run's ``metrics.csv``."""
        return os.path.join(self.log_dir, _MetricsFile.NAME)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Add a row: ``step`` (the row's index when ``None``) and ``metrics``' numbers.

        Nested dicts become ``outer/inner`` columns. A metric named ``step`` is used as the
        step when ``step`` is ``None`` (and not written as a column).

        Raises:
            ValueError: A value is not a number or a one-element tensor.
        """
        metrics = dict(metrics)
        named_step = metrics.pop("step", None)
        values = self.metric_values(metrics)
        file = self._metrics_file()
        if step is None:
            step = int(number("CSVLogger", "step", named_step)) if named_step is not None else file.row_count
        file.add({"step": step, **values})
        if file.buffered >= self._flush_every:
            file.flush()

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Write ``params`` to ``hparams.yaml`` in `log_dir` (``hparams.json`` without PyYAML).

        ``params`` is a dict, an ``argparse.Namespace`` or a dataclass instance; values YAML
        cannot hold (paths, dtypes, ...) are written as text. Later calls add to the file.
        """
        self.write_hparams_file(hyperparameters("CSVLogger", params))

    @rank_zero_only
    def save(self) -> None:
        """Write the buffered rows to ``metrics.csv`` now."""
        if self._file is not None:
            self._file.flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write the buffered rows; call at the end of the run (also safe to call twice)."""
        self.save()

    def _metrics_file(self) -> _MetricsFile:
        if self._file is None:
            self._file = _MetricsFile(Path(self.metrics_file_path))
            # Written at garbage collection or interpreter exit too; the callback holds the
            # file, not the logger, so it does not keep the logger alive.
            weakref.finalize(self, self._file.flush)
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to a spawned process must not write this process's buffered rows again.
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __repr__(self) -> str:
        return f"CSVLogger(save_dir={self.save_dir!r}, name={self.name!r}, version={self._version!r})"


class _MetricsFile:
    """The rows of one ``metrics.csv``: those in the file and those buffered in memory."""

    NAME = "metrics.csv"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        if path.is_file():  # an existing run continued: keep its columns and rows
            with path.open(newline="") as file:
                reader = csv.reader(file)
                self.columns = next(reader, [])
                self.written = sum(1 for _ in reader)

    @property
    def buffered(self) -> int:
        """The rows not yet in the file."""
        return len(self.rows)

    @property
    def row_count(self) -> int:
        """The rows in the file and the buffer."""
        return self.written + len(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        """Buffer ``row``."""
        self.rows.append(row)

    def flush(self) -> None:
        """Append the buffered rows to the file, rewriting it first if the header must grow."""
        if not self.rows:
            return
        known = set(self.columns)
        new: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in known:
                    known.add(key)
                    new.append(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as file:
                csv.DictWriter(file, self.columns, restval="").writerows(self.rows)
        self.written += len(self.rows)
        self.rows.clear()

    def _rewrite(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", newline="") as file:
            writer = csv.DictWriter(file, self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            if self.path.is_file():
                with self.path.open(newline="") as old:
                    writer.writerows(csv.DictReader(old))
            writer.writerows(self.rows)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)
