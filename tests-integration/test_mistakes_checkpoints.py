"""The table of checkpoint mistakes: one clear message from fabric for each.

Every row commits one mistake a user plausibly makes when saving, loading, inspecting or
converting a checkpoint (see :mod:`mistakes` for what the check requires). The rows run in
this process on one CPU device (``ddp`` rows start a one-process gloo group here), except one
``fabric checkpoint`` row that runs the real command line; the other command rows call the
same ``main`` in this process and capture what it prints.

Filesystem conditions are real: a directory made read-only (entered as the unprivileged user
``nobody`` when the tests run as root, whom permissions do not stop), ``/dev/full`` for a full
disk (it answers every write with ``ENOSPC``), truncated and bit-flipped files.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from mistakes import CommandFailed, Mistake, check_mistake, fabric_command
from torch import nn

from fabric_core import Fabric
from fabric_core.cli import main as fabric_main
from fabric_core.io.atomic import temporary_name
from fabric_core.utilities.checkpoint import StateDictMismatchError

_NOBODY = 65534


def _fabric(strategy: str = "single_device") -> Fabric:
    fabric = Fabric(accelerator="cpu", devices=1, strategy=strategy)
    if strategy != "single_device":
        fabric.launch()  # one process: a gloo group of one in this process
    return fabric


def _trained(fabric: Fabric) -> tuple[Any, Any]:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=0.01))
    fabric.backward(model(torch.ones(3, 2)).sum())
    optimizer.step()
    return model, optimizer


def _saved(tmp_path: Path, name: str = "c.pt") -> tuple[Fabric, Any, Any, Path]:
    fabric = _fabric()
    model, optimizer = _trained(fabric)
    path = tmp_path / name
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": 1})
    return fabric, model, optimizer, path


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A directory that the user ``nobody`` can enter (pytest's ``tmp_path`` is private to root)."""
    scratch = Path(tempfile.mkdtemp(prefix="fabric-mistake-"))
    scratch.chmod(0o755)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch)


@contextlib.contextmanager
def _as_unprivileged_user() -> Iterator[None]:
    """Act as ``nobody`` when running as root, whom file permissions do not stop; else as oneself."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(_NOBODY)
    os.seteuid(_NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextlib.contextmanager
def _ddp_group() -> Iterator[Fabric]:
    fabric = _fabric("ddp")
    try:
        yield fabric
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class Box:
    """A custom class: safe (weights_only) loading refuses to unpickle it."""


# -- saving ----------------------------------------------------------------------------------


def save_into_a_read_only_directory(_: Path) -> None:
    fabric = _fabric()
    with _scratch() as scratch:
        read_only = scratch / "checkpoints"
        read_only.mkdir()
        read_only.chmod(0o555)
        with _as_unprivileged_user():
            fabric.save(read_only / "c.pt", {"step": 1})


def save_into_a_read_only_directory_under_ddp(_: Path) -> None:
    with _ddp_group() as fabric, _scratch() as scratch:
        scratch.chmod(0o555)
        with _as_unprivileged_user():
            fabric.save(scratch / "c.pt", {"step": 1})


def save_onto_a_full_disk(_: Path) -> None:
    _fabric().save("/dev/full", {"weights": torch.zeros(100_000)})


def save_onto_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    _fabric().save(tmp_path / "runs", {"step": 1})


def save_below_a_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("not a directory")
    _fabric().save(tmp_path / "checkpoints" / "c.pt", {"step": 1})


def save_a_lambda_in_the_state(tmp_path: Path) -> None:
    fabric = _fabric()
    model, _ = _trained(fabric)
    fabric.save(tmp_path / "c.pt", {"model": model, "hook": lambda step: step + 1})


def save_a_lock_deep_in_the_state(tmp_path: Path) -> None:
    _fabric().save(tmp_path / "c.pt", {"step": 1, "config": {"workers": [1, threading.Lock()]}})


def save_a_local_function(tmp_path: Path) -> None:
    def schedule(step: int) -> float:
        return 0.1 * step

    _fabric().save(tmp_path / "c.pt", {"schedule": schedule})


def save_with_path_and_state_swapped(tmp_path: Path) -> None:
    fabric = _fabric()
    model, _ = _trained(fabric)
    fabric.save({"model": model}, str(tmp_path / "c.pt"))  # type: ignore[arg-type]


def save_to_a_path_that_is_not_a_path(_: Path) -> None:
    _fabric().save(None, {"step": 1})  # type: ignore[arg-type]


def save_a_list_as_the_state(tmp_path: Path) -> None:
    fabric = _fabric()
    model, optimizer = _trained(fabric)
    fabric.save(tmp_path / "c.pt", [model, optimizer])  # type: ignore[arg-type]


# -- loading ---------------------------------------------------------------------------------


def load_a_missing_file(tmp_path: Path) -> None:
    fabric, model, _, _ = _saved(tmp_path, "last.pt")
    fabric.load(tmp_path / "latest.pt", {"model": model})


def load_from_a_missing_directory(tmp_path: Path) -> None:
    _fabric().load(tmp_path / "runs" / "c.pt")


def load_a_checkpoint_whose_first_save_was_killed(tmp_path: Path) -> None:
    (tmp_path / temporary_name(tmp_path / "c.pt")).write_bytes(b"PK\x03\x04 partial")  # as a kill leaves it
    _fabric().load(tmp_path / "c.pt")


def load_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "c.pt").touch()
    _fabric().load(tmp_path / "c.pt")


def load_a_truncated_file(tmp_path: Path) -> None:
    fabric, _, _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fabric.load(path)


def load_a_corrupted_file(tmp_path: Path) -> None:
    fabric, _, _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    start = data.find(b"data.pkl") + 80  # inside the pickled object tree
    data[start : start + 16] = bytes(byte ^ 0x5A for byte in data[start : start + 16])
    path.write_bytes(bytes(data))
    fabric.load(path)


def load_a_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_text("epoch,loss\n1,0.5\n")
    _fabric().load(tmp_path / "c.pt")


def load_custom_objects_safely(tmp_path: Path) -> None:
    fabric = _fabric()
    fabric.save(tmp_path / "c.pt", {"box": Box()})
    fabric.load(tmp_path / "c.pt")


def load_into_a_model_of_another_size(tmp_path: Path) -> None:
    fabric, _, _, path = _saved(tmp_path)
    fabric.load(path, {"model": fabric.setup(nn.Linear(2, 3))})


def load_into_a_model_of_another_size_under_ddp(tmp_path: Path) -> None:
    with _ddp_group() as fabric:
        model = fabric.setup(nn.Linear(2, 2))
        fabric.save(tmp_path / "c.pt", {"model": model})
        fabric.load(tmp_path / "c.pt", {"model": fabric.setup(nn.Linear(2, 4))})


def load_into_a_model_with_more_layers(tmp_path: Path) -> None:
    fabric, _, _, path = _saved(tmp_path)
    bigger = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    fabric.load(path, {"model": fabric.setup(bigger)}, strict=True)


def load_into_a_model_without_bias(tmp_path: Path) -> None:
    fabric, _, _, path = _saved(tmp_path)
    fabric.load(path, {"model": fabric.setup(nn.Linear(2, 2, bias=False))})


def load_with_swapped_state_names(tmp_path: Path) -> None:
    fabric, model, optimizer, path = _saved(tmp_path)
    fabric.load(path, {"model": optimizer, "optimizer": model})


def load_a_plain_state_dict_file(tmp_path: Path) -> None:
    fabric = _fabric()
    model, _ = _trained(fabric)
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "weights.pt")
    fabric.load(tmp_path / "weights.pt", {"model": model}, strict=False)


def load_a_plain_optimizer_state_dict_file(tmp_path: Path) -> None:
    fabric = _fabric()
    model, optimizer = _trained(fabric)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    fabric.load(tmp_path / "optimizer.pt", {"model": model, "optimizer": optimizer})


def load_raw_of_a_fabric_checkpoint(tmp_path: Path) -> None:
    fabric, model, _, path = _saved(tmp_path)
    fabric.load_raw(path, model)


def load_a_missing_entry(tmp_path: Path) -> None:
    fabric, model, _, path = _saved(tmp_path)
    fabric.load(path, {"model": model, "scheduler": torch.optim.lr_scheduler.StepLR})


def load_into_a_bare_model(tmp_path: Path) -> None:
    fabric, model, _, path = _saved(tmp_path)
    fabric.load(path, model)  # type: ignore[arg-type]


def load_a_sharded_optimizer_without_its_model(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    dcp.save(
        {"optimizer": get_optimizer_state_dict(model, optimizer)},
        storage_writer=dcp.FileSystemWriter(tmp_path / "ckpt"),
        no_dist=True,
    )
    _fabric().load(tmp_path / "ckpt", {"optimizer": torch.optim.Adam(nn.Linear(2, 2).parameters())})


def load_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    _fabric().load(tmp_path / "ckpt")


# -- fabric checkpoint -----------------------------------------------------------------------


def _command(*args: str) -> Callable[[Path], None]:
    """Run ``fabric checkpoint ARGS`` in this process (paths relative to the row's directory)."""

    def run(tmp_path: Path) -> None:
        output = io.StringIO()
        cwd = Path.cwd()
        os.chdir(tmp_path)
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                status = fabric_main(["checkpoint", *args])
        finally:
            os.chdir(cwd)
        if status != 0:
            raise CommandFailed(status, output.getvalue())

    return run


def _with(prepare: Callable[[Path], None], command: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(tmp_path: Path) -> None:
        prepare(tmp_path)
        command(tmp_path)

    return run


def inspect_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-100").mkdir()
    fabric_command("checkpoint", "inspect", "checkpoints/step-1000", cwd=tmp_path)  # the real command line


def _fake_directory(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"{}")


def _fake_metadata(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".metadata").write_text("not DCP metadata")


def _incomplete_dcp(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(2)}, storage_writer=dcp.FileSystemWriter(tmp_path / "ckpt"), no_dist=True)
    (tmp_path / "ckpt" / "__0_0.distcp").unlink()


def _garbage_file(tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_bytes(b"\x00" * 64)


def _single_file(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "c.pt")


def _file_and_a_directory_in_the_way(tmp_path: Path) -> None:
    _single_file(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.csv").write_text("step,loss\n")


MISTAKES = [
    Mistake(
        "save-into-a-read-only-directory",
        save_into_a_read_only_directory,
        PermissionError,
        ("is read-only for this user", "checkpoints", "Save to a directory you can write to"),
    ),
    Mistake(
        "save-into-a-read-only-directory-under-ddp",
        save_into_a_read_only_directory_under_ddp,
        PermissionError,
        ("is read-only for this user", "c.pt", "chmod u+w"),
    ),
    Mistake(
        "save-onto-a-full-disk",
        save_onto_a_full_disk,
        OSError,
        (
            "No space left on the device",
            "'/dev/full'",
            "Free space",
            "previous checkpoint there is unchanged",
        ),
    ),
    Mistake(
        "save-onto-an-existing-directory",
        save_onto_an_existing_directory,
        IsADirectoryError,
        ("is an existing directory", "notes.txt", "Pass a file path", "checkpoint.pt"),
    ),
    Mistake(
        "save-below-a-path-that-is-a-file",
        save_below_a_path_that_is_a_file,
        NotADirectoryError,
        ("checkpoints' is a file, not a directory", "c.pt"),
    ),
    Mistake(
        "save-a-lambda-in-the-state",
        save_a_lambda_in_the_state,
        TypeError,
        ("state['hook'] cannot be saved", "a lambda", "Leave it out of the state", "Nothing was written"),
    ),
    Mistake(
        "save-a-lock-deep-in-the-state",
        save_a_lock_deep_in_the_state,
        TypeError,
        ("state['config']['workers'][1] cannot be saved", "_thread.lock"),
    ),
    Mistake(
        "save-a-local-function",
        save_a_local_function,
        TypeError,
        ("state['schedule'] cannot be saved", "the local function", "schedule"),
    ),
    Mistake(
        "save-with-path-and-state-swapped",
        save_with_path_and_state_swapped,
        TypeError,
        ("takes the path first", "c.pt', state)"),
    ),
    Mistake(
        "save-to-a-path-that-is-not-a-path",
        save_to_a_path_that_is_not_a_path,
        TypeError,
        ("needs a path (a str or pathlib.Path)", "NoneType"),
    ),
    Mistake(
        "save-a-list-as-the-state",
        save_a_list_as_the_state,
        TypeError,
        ("must be a dict of names to objects", "list", "{'model': model"),
    ),
    Mistake(
        "load-a-missing-file",
        load_a_missing_file,
        FileNotFoundError,
        (
            "No checkpoint at",
            "latest.pt",
            "holds: last.pt",
            "Pass the path fabric.save() wrote",
            "path.exists()",
        ),
    ),
    Mistake(
        "load-from-a-missing-directory",
        load_from_a_missing_directory,
        FileNotFoundError,
        ("No checkpoint at", "runs' does not exist"),
    ),
    Mistake(
        "load-a-checkpoint-whose-first-save-was-killed",
        load_a_checkpoint_whose_first_save_was_killed,
        FileNotFoundError,
        ("No checkpoint at", "A save to it did not finish", "not a checkpoint"),
    ),
    Mistake(
        "load-an-empty-file",
        load_an_empty_file,
        ValueError,
        ("Cannot load the checkpoint", "empty (0 bytes)", "load an earlier checkpoint"),
    ),
    Mistake(
        "load-a-truncated-file",
        load_a_truncated_file,
        ValueError,
        ("Cannot load the checkpoint", "truncated", "did not finish"),
    ),
    Mistake(
        "load-a-corrupted-file",
        load_a_corrupted_file,
        ValueError,
        ("Cannot load the checkpoint", "corrupted", "fails its CRC check"),
    ),
    Mistake(
        "load-a-garbage-file",
        load_a_garbage_file,
        ValueError,
        ("Cannot load the checkpoint", "not a torch checkpoint", "epoch,loss", "Pass the right file"),
    ),
    Mistake(
        "load-custom-objects-safely",
        load_custom_objects_safely,
        ValueError,
        ("refuses", "test_mistakes_checkpoints.Box", "If you trust the file", "weights_only=False"),
    ),
    Mistake(
        "load-into-a-model-of-another-size",
        load_into_a_model_of_another_size,
        StateDictMismatchError,
        (
            "entry 'model'",
            'Shape mismatch: "weight" is [2, 2] in the checkpoint but [3, 2] in the model',
            "configuration",
        ),
    ),
    Mistake(
        "load-into-a-model-of-another-size-under-ddp",
        load_into_a_model_of_another_size_under_ddp,
        StateDictMismatchError,
        ('"bias" is [2] in the checkpoint but [4] in the model', "(Linear)"),
    ),
    Mistake(
        "load-into-a-model-with-more-layers",
        load_into_a_model_with_more_layers,
        StateDictMismatchError,
        (
            'Missing key(s) (in the model, not in the checkpoint): "0.weight", "0.bias", "2.weight"',
            "strict=False",
        ),
    ),
    Mistake(
        "load-into-a-model-without-bias",
        load_into_a_model_without_bias,
        StateDictMismatchError,
        ('Unexpected key(s) (in the checkpoint, not in the model): "bias"', "strict=False"),
    ),
    Mistake(
        "load-with-swapped-state-names",
        load_with_swapped_state_names,
        TypeError,
        ("state['model'] is an optimizer (Adam)", "a model's state dict", "Are the names swapped?"),
    ),
    Mistake(
        "load-a-plain-state-dict-file",
        load_a_plain_state_dict_file,
        ValueError,
        (
            "plain state dict",
            "'weight', 'bias'",
            "fabric.load_raw(path, model)",
            "strict=False would load nothing",
        ),
    ),
    Mistake(
        "load-a-plain-optimizer-state-dict-file",
        load_a_plain_optimizer_state_dict_file,
        ValueError,
        ("an optimizer's plain state dict", "fabric.load_raw(path, optimizer)"),
    ),
    Mistake(
        "load-raw-of-a-fabric-checkpoint",
        load_raw_of_a_fabric_checkpoint,
        TypeError,
        ("checkpoint of named entries ('model', 'optimizer', 'step')", "fabric.load(path, {'model': model"),
    ),
    Mistake(
        "load-a-missing-entry",
        load_a_missing_entry,
        KeyError,
        ("has no entry 'scheduler'", "it holds: 'model', 'optimizer', 'step'", "strict=False"),
    ),
    Mistake(
        "load-into-a-bare-model",
        load_into_a_bare_model,
        TypeError,
        ("got a bare Linear", "fabric.load(path, {'model': model, ...})", "load_raw"),
    ),
    Mistake(
        "load-a-sharded-optimizer-without-its-model",
        load_a_sharded_optimizer_without_its_model,
        TypeError,
        ("by parameter names needs the model", "{'model': model, 'optimizer': optimizer}"),
    ),
    Mistake(
        "load-an-empty-directory",
        load_an_empty_directory,
        IsADirectoryError,
        ("is an empty directory", "Pass the path fabric.save() wrote"),
    ),
    Mistake(
        "checkpoint-inspect-a-missing-directory",
        inspect_a_missing_directory,
        CommandFailed,
        ("No checkpoint at 'checkpoints/step-1000'", "holds: step-100"),
    ),
    Mistake(
        "checkpoint-inspect-a-directory-that-is-not-a-checkpoint",
        _with(_fake_directory, _command("inspect", "ckpt")),
        CommandFailed,
        ("'ckpt' is a directory but not a checkpoint", "model.safetensors", "known formats: dcp"),
    ),
    Mistake(
        "checkpoint-convert-a-fake-dcp-directory",
        _with(_fake_metadata, _command("convert", "ckpt", "out.pt", "--to", "full")),
        CommandFailed,
        ("ckpt/.metadata' cannot be read", "not written by torch.distributed.checkpoint"),
    ),
    Mistake(
        "checkpoint-convert-an-incomplete-dcp-directory",
        _with(_incomplete_dcp, _command("consolidate", "ckpt", "out.pt")),
        CommandFailed,
        ("is incomplete", "__0_0.distcp", "Copy every file"),
    ),
    Mistake(
        "checkpoint-inspect-a-garbage-file",
        _with(_garbage_file, _command("inspect", "c.pt", "--json")),
        CommandFailed,
        ("Cannot load the checkpoint 'c.pt'", "not a torch checkpoint"),
    ),
    Mistake(
        "checkpoint-convert-a-file-to-full",
        _with(_single_file, _command("convert", "c.pt", "out.pt", "--to", "full")),
        CommandFailed,
        ("'c.pt' is already a single file", "--to full"),
    ),
    Mistake(
        "checkpoint-convert-a-directory-to-sharded",
        _with(_incomplete_dcp, _command("convert", "ckpt", "out", "--to", "sharded")),
        CommandFailed,
        ("'ckpt' is a directory", "--to sharded converts one torch.save file"),
    ),
    Mistake(
        "checkpoint-convert-onto-a-directory-that-is-not-a-checkpoint",
        _with(_file_and_a_directory_in_the_way, _command("convert", "c.pt", "results", "--to", "sharded")),
        CommandFailed,
        ("existing directory (holding metrics.csv) that is not a checkpoint", "Pass a new path"),
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=str)
def test_mistake(mistake: Mistake, tmp_path: Path) -> None:
    check_mistake(mistake, tmp_path)
