"""CSVLogger and TensorBoardLogger behind fabric.log, the Logger base class, and Fabric's checks of loggers."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import pickle
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fabric_core import Fabric
from fabric_core.loggers import CSVLogger, Logger, TensorBoardLogger
from fabric_core.utilities import rank_zero
from fabric_core.utilities.rank_zero import rank_zero_only


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def on_rank(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Pretend to be another global rank, as Fabric does after launch (rank_zero_only.rank)."""

    def set_rank(rank: int) -> None:
        monkeypatch.setattr(rank_zero_only, "rank", rank, raising=False)

    yield set_rank


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which warn_once messages were said, so this test hears them."""
    monkeypatch.setattr(rank_zero, "_said", set())


# -- CSVLogger ------------------------------------------------------------------------------------


def test_csv_logger_behind_fabric_log_writes_a_step_column_and_one_column_per_metric(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="exp")
    fabric = Fabric(accelerator="cpu", loggers=logger)

    fabric.log("loss", torch.tensor(0.5), step=0)
    fabric.log_dict({"loss": 0.25, "lr": 0.1}, step=1)
    fabric.log_dict({"nested": {"a": 1}}, step=2)
    logger.finalize("success")

    assert logger.log_dir == str(tmp_path / "exp" / "version_0")
    assert logger.metrics_file_path == str(tmp_path / "exp" / "version_0" / "metrics.csv")
    header, rows = read_csv(logger.metrics_file_path)
    assert header == ["step", "loss", "lr", "nested/a"]
    assert rows == [
        {"step": "0", "loss": "0.5", "lr": "", "nested/a": ""},
        {"step": "1", "loss": "0.25", "lr": "0.1", "nested/a": ""},
        {"step": "2", "loss": "", "lr": "", "nested/a": "1"},
    ]


def test_csv_logger_widens_the_header_and_keeps_only_buffered_rows_out_of_the_file(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)

    logger.log_metrics({"loss": 1.0}, step=0)
    assert not Path(logger.metrics_file_path).exists()  # one row buffered
    logger.log_metrics({"loss": 0.9}, step=1)
    assert read_csv(logger.metrics_file_path) == (
        ["step", "loss"],
        [{"step": "0", "loss": "1.0"}, {"step": "1", "loss": "0.9"}],
    )
    logger.log_metrics({"loss": 0.8, "acc": 0.5}, step=2)
    logger.log_metrics({"acc": 0.6}, step=3)  # second row: flushed, with a new column

    header, rows = read_csv(logger.metrics_file_path)
    assert header == ["step", "loss", "acc"]
    assert [row["acc"] for row in rows] == ["", "", "0.5", "0.6"]
    assert [row["loss"] for row in rows] == ["1.0", "0.9", "0.8", ""]
    assert not list(Path(logger.log_dir).glob("*.partial"))

    logger.log_metrics({"acc": 0.7}, step=4)
    logger.save()  # an append, the header stays
    assert len(read_csv(logger.metrics_file_path)[1]) == 5


def test_csv_logger_writes_its_buffer_when_garbage_collected(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="")
    logger.log_metrics({"loss": 1.0})
    logger.log_metrics({"loss": 0.5})
    path = logger.metrics_file_path

    del logger
    gc.collect()

    assert read_csv(path)[1] == [{"step": "0", "loss": "1.0"}, {"step": "1", "loss": "0.5"}]


def test_a_pickled_csv_logger_sent_to_a_spawned_process_does_not_write_rows_twice(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, version=0)
    logger.log_metrics({"loss": 1.0}, step=0)  # buffered in this process
    copy = pickle.loads(pickle.dumps(logger))

    copy.log_metrics({"loss": 0.5}, step=1)
    copy.finalize()
    logger.finalize()

    assert read_csv(logger.metrics_file_path)[1] == [
        {"step": "1", "loss": "0.5"},
        {"step": "0", "loss": "1.0"},
    ]


def test_csv_logger_writes_its_buffer_when_the_script_dies_of_an_exception(tmp_path: Path) -> None:
    script = (
        "from fabric_core.loggers import CSVLogger\n"
        f"logger = CSVLogger({str(tmp_path)!r}, name='')\n"
        "logger.log_metrics({'loss': 1.0}, step=7)\n"
        "raise SystemExit('crashed')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 1 and "crashed" in result.stderr
    assert read_csv(tmp_path / "version_0" / "metrics.csv")[1] == [{"step": "7", "loss": "1.0"}]


def test_versions_count_up_and_an_explicit_version_continues_its_run(tmp_path: Path) -> None:
    first = CSVLogger(save_dir=tmp_path)
    first.log_metrics({"loss": 1.0}, step=0)
    first.finalize()
    second = CSVLogger(root_dir=tmp_path)  # Lightning Fabric's name for the folder
    second.log_metrics({"loss": 2.0}, step=0)
    second.finalize()
    named = CSVLogger(tmp_path, version="baseline")

    assert (first.version, second.version) == (0, 1)
    assert Path(second.log_dir) == tmp_path / "lightning_logs" / "version_1"
    assert Path(named.log_dir) == tmp_path / "lightning_logs" / "baseline"
    assert CSVLogger(tmp_path).version == 2

    resumed = CSVLogger(tmp_path, version=0)
    resumed.log_metrics({"loss": 0.5})  # no step: the row's index in the file
    resumed.finalize()
    assert read_csv(first.metrics_file_path)[1] == [
        {"step": "0", "loss": "1.0"},
        {"step": "1", "loss": "0.5"},
    ]


def test_csv_logger_takes_a_metric_named_step_as_the_step(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, prefix="train")
    logger.log_metrics({"loss": 1.0, "step": 40})
    logger.finalize()

    assert read_csv(logger.metrics_file_path) == (
        ["step", "train-loss"],
        [{"step": "40", "train-loss": "1.0"}],
    )


def test_bad_arguments_and_values_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"needs the folder to write into: CSVLogger\('logs'\)"):
        CSVLogger()
    with pytest.raises(TypeError, match="two names for the same folder"):
        CSVLogger(tmp_path, root_dir=tmp_path)
    with pytest.raises(ValueError, match="flush_logs_every_n_steps=0"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)
    with pytest.raises(TypeError, match=r"version=1\.5"):
        CSVLogger(tmp_path, version=1.5)  # type: ignore[arg-type]
    logger = CSVLogger(tmp_path)
    with pytest.raises(
        ValueError, match=r"'hist' is a Tensor of shape \(2,\).*fabric.log\('hist', value.mean\(\)\)"
    ):
        logger.log_metrics({"hist": torch.ones(2)})
    with pytest.raises(ValueError, match="'name' is a str"):
        logger.log_metrics({"name": "resnet"})
    with pytest.raises(
        TypeError, match=r"expects a dict, an argparse\.Namespace or a dataclass instance, got int"
    ):
        logger.log_hyperparams(3)


@dataclasses.dataclass
class Config:
    lr: float = 0.1
    dtype: torch.dtype = torch.bfloat16
    out: Path = Path("out")


def test_hyperparameters_go_to_hparams_yaml_merged_across_calls(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)

    logger.log_hyperparams(argparse.Namespace(batch_size=8, model={"layers": 2}))
    logger.log_hyperparams(Config())

    expected = {"batch_size": 8, "model": {"layers": 2}, "lr": 0.1, "dtype": "torch.bfloat16", "out": "out"}
    try:
        import yaml
    except ImportError:  # the environment without PyYAML: hparams.json (checked on its own below)
        assert json.loads((Path(logger.log_dir) / "hparams.json").read_text()) == expected
    else:
        assert yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text()) == expected


def test_without_pyyaml_hyperparameters_go_to_hparams_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # what `import yaml` meets when PyYAML is missing
    logger = CSVLogger(tmp_path)

    logger.log_hyperparams({"lr": 0.1, "sizes": (1, 2), "weights": torch.tensor([0.5, 1.0])})
    logger.log_hyperparams({"lr": 0.2})

    path = Path(logger.log_dir) / "hparams.json"
    assert json.loads(path.read_text()) == {"lr": 0.2, "sizes": [1, 2], "weights": [0.5, 1.0]}
    assert not (Path(logger.log_dir) / "hparams.yaml").exists()


def test_file_loggers_write_from_global_rank_zero_only(tmp_path: Path, on_rank: Any) -> None:
    on_rank(1)
    logger = CSVLogger(tmp_path)
    fabric = Fabric(accelerator="cpu", loggers=logger)

    fabric.log("loss", 1.0, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize()

    assert not (tmp_path / "lightning_logs").exists()
    on_rank(0)
    fabric.log("loss", 1.0, step=0)
    logger.finalize()
    assert read_csv(logger.metrics_file_path)[1] == [{"step": "0", "loss": "1.0"}]


# -- Fabric and loggers ---------------------------------------------------------------------------


def test_fabric_names_what_a_logger_needs_when_given_something_else() -> None:
    with pytest.raises(TypeError, match=r"Fabric\(loggers\[0\]=<object .*log_metrics\(metrics, step\)"):
        Fabric(accelerator="cpu", loggers=[object()])
    with pytest.raises(TypeError, match=r"Fabric\(loggers=5\).*log_metrics\(metrics, step\) method, and int"):
        Fabric(accelerator="cpu", loggers=5)


def test_fabric_log_without_a_logger_warns_once(fresh_warnings: None) -> None:
    fabric = Fabric(accelerator="cpu")

    with pytest.warns(
        UserWarning, match=r"has no logger, so the metrics go nowhere.*CSVLogger\('logs'\)"
    ) as said:
        fabric.log("loss", 1.0)
    assert [warning.filename for warning in said] == [__file__]  # points at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fabric.log("loss", 0.5)
        fabric.log_dict({"loss": 0.25})


class PrintLogger(Logger):
    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], int | None]] = []
        self.saved = 0

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.seen.append((dict(metrics), step))

    def save(self) -> None:
        self.saved += 1


def test_a_logger_subclass_needs_only_log_metrics() -> None:
    logger = PrintLogger()
    fabric = Fabric(accelerator="cpu", loggers=[logger])

    fabric.log("loss", torch.tensor(2.0), step=3)
    logger.log_hyperparams({"ignored": True})
    logger.finalize("success")

    assert logger.seen == [({"loss": 2.0}, 3)]
    assert logger.saved == 1
    assert (logger.name, logger.version, logger.save_dir, logger.root_dir, logger.log_dir) == (None,) * 5
    with pytest.raises(TypeError, match="abstract"):
        Logger()  # type: ignore[abstract]


def test_the_loggers_package_imports_each_logger_on_first_access() -> None:
    script = (
        "import sys, fabric_core.loggers as loggers\n"
        "assert 'fabric_core.loggers.csv_logs' not in sys.modules\n"
        "loggers.CSVLogger\n"
        "assert 'torch' not in sys.modules and 'tensorboard' not in sys.modules\n"
        "assert {'CSVLogger', 'Logger', 'TensorBoardLogger'} <= set(dir(loggers))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# -- TensorBoardLogger ----------------------------------------------------------------------------


def test_tensorboard_logger_without_tensorboard_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` meets when missing
    for name in [name for name in sys.modules if name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(
        ModuleNotFoundError, match=r"needs the tensorboard package.*pip install 'fabric-core\[tensorboard\]'"
    ):
        TensorBoardLogger(tmp_path)


def test_tensorboard_logger_writes_events_on_rank_zero_only(tmp_path: Path, on_rank: Any) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="exp", sub_dir="train")
    fabric = Fabric(accelerator="cpu", loggers=logger)
    fabric.log("loss", torch.tensor(0.5), step=0)
    fabric.log_dict({"loss": 0.25, "opt": {"lr": 0.1}}, step=1)
    logger.log_hyperparams({"lr": 0.1, "layers": [2, 3]})
    logger.finalize("success")

    assert Path(logger.log_dir) == tmp_path / "exp" / "version_0" / "train"
    written = {path.name for path in Path(logger.log_dir).glob("hparams.*")}
    assert written in ({"hparams.yaml"}, {"hparams.json"})
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("loss")] == [(0, 0.5), (1, 0.25)]
    assert [event.value for event in events.Scalars("opt/lr")] == pytest.approx([0.1])
    assert [event.value for event in events.Scalars("hp_metric")] == [-1]
    hparams = events.PluginTagToContent("hparams")
    assert b"layers" in hparams["_hparams_/session_start_info"]
    assert b"hp_metric" in hparams["_hparams_/experiment"]
    assert TensorBoardLogger(tmp_path, name="exp").version == 1

    on_rank(1)  # on other ranks: nothing written, and the experiment's methods do nothing
    elsewhere = TensorBoardLogger(tmp_path / "rank1")
    elsewhere.log_metrics({"loss": 1.0}, step=0)
    elsewhere.experiment.add_histogram("weights", torch.ones(3), 0)
    elsewhere.log_hyperparams({"lr": 0.1})
    elsewhere.finalize()
    assert not (tmp_path / "rank1").exists()
