"""Checkpoint files: atomic under SIGKILL, the umask's permissions, inspect and convert round trips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from core_helpers import TinyModel, regression_data
from test_checkpoint import assert_same_state
from torch import nn

from fabric_core import Fabric
from fabric_core.cli import main as fabric_main
from fabric_core.io import TorchCheckpointIO, atomic
from fabric_core.io.formats import CheckpointFormat, DCPFormat, atomic_output
from fabric_core.io.summary import describe_file


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def trained_state(fabric: Fabric) -> dict[str, Any]:
    """A model and an Adam optimizer after one step (so the optimizer has moments), and plain values."""
    torch.manual_seed(0)
    model = TinyModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    x, y = regression_data(n=8)
    fabric.backward(nn.functional.mse_loss(model(x), y))
    optimizer.step()
    return {"model": model, "optimizer": optimizer, "step": 1, "config": {"name": "run", "sizes": [1, 2]}}


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_saved_file_gets_the_permissions_of_the_umask(
    fabric: Fabric, tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    fabric.save(tmp_path / "c.pt", {"step": 1})
    fabric.save(tmp_path / "c.pt", {"step": 2})  # replacing keeps the umask's mode too

    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == mode


# The writer: a real TorchCheckpointIO whose byte sink, after 1 MB of a 32 MB checkpoint,
# says "writing" and sleeps, so the parent kills it mid-write at a known point.
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    from fabric_core.io import TorchCheckpointIO

    class Slow:
        def __init__(self, file):
            self.file, self.written = file, 0
        def write(self, data):
            self.file.write(data)
            self.written += len(data)
            if self.written > 1_000_000:
                self.file.flush()
                print("writing", flush=True)
                time.sleep(120)
            return len(data)
        def flush(self):
            self.file.flush()

    class SlowIO(TorchCheckpointIO):
        def _write(self, checkpoint, file):
            super()._write(checkpoint, Slow(file))

    SlowIO().save_checkpoint({"step": 2, "weights": torch.ones(8_000_000)}, sys.argv[1])
    """
)


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint_and_the_next_save_removes_its_temporary(
    fabric: Fabric, tmp_path: Path
) -> None:
    path = tmp_path / "c.pt"
    fabric.save(path, {"step": 1, "weights": torch.zeros(3)})
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        (temporary,) = atomic.temporaries_of(path)
        assert temporary.stat().st_size > 1_000_000
        assert temporary.name.startswith(".c.pt.fabric-") and f"-{writer.pid}-" in temporary.name

        fabric.save(tmp_path / "other.pt", {"step": 0})  # another save to the directory, while it writes
        assert temporary.exists(), "the temporary of a save in progress in a live process must stay"

        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.wait()

    assert sorted(os.listdir(tmp_path)) == sorted(["c.pt", "other.pt", "writer.py", temporary.name])
    assert fabric.load(path)["step"] == 1, "the previous checkpoint must still load"
    fabric.save(tmp_path / "other.pt", {"step": 1})  # the next save to the directory cleans up
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "other.pt", "writer.py"]


def test_loading_a_checkpoint_whose_first_save_was_killed_says_so(fabric: Fabric, tmp_path: Path) -> None:
    leftover = tmp_path / atomic.temporary_name(tmp_path / "c.pt")
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")

    with pytest.raises(
        FileNotFoundError, match=r"No checkpoint at .*c\.pt.*did not finish.*not a checkpoint"
    ):
        fabric.load(tmp_path / "c.pt")


def test_temporaries_of_other_hosts_and_of_this_live_process_are_kept(tmp_path: Path) -> None:
    other_host = tmp_path / ".c.pt.fabric-otherhost-1-0123abcd.tmp"
    own = tmp_path / atomic.temporary_name(tmp_path / "c.pt")  # this process is alive
    unrelated = tmp_path / ".notes.tmp"
    for file in (other_host, own, unrelated):
        file.write_bytes(b"x")

    assert atomic.remove_stale_temporaries(tmp_path) == []
    assert other_host.exists() and own.exists() and unrelated.exists()


def test_replace_path_swaps_a_directory_in_one_step_and_leaves_no_old_copy(tmp_path: Path) -> None:
    target, new = tmp_path / "ckpt", tmp_path / "new"
    for directory, text in ((target, "old"), (new, "new")):
        directory.mkdir()
        (directory / "shard").write_text(text)

    atomic.replace_path(new, target)

    assert (target / "shard").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_without_an_atomic_exchange_the_old_directory_is_parked_and_named_by_load(
    fabric: Fabric, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without renameat2: a process killed between the two renames leaves ``.<name>.old``."""
    monkeypatch.setattr(atomic, "_exchange", lambda source, target: False)
    target, new = tmp_path / "ckpt", tmp_path / "new"
    target.mkdir()
    new.mkdir()
    (new / "shard").write_text("new")
    atomic.replace_path(new, target)
    assert (target / "shard").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["ckpt"]

    target.rename(tmp_path / ".ckpt.old")  # where a kill between the two renames leaves it
    with pytest.raises(FileNotFoundError, match=r"previous checkpoint is complete at '.*\.ckpt\.old'"):
        fabric.load(target)


def test_a_file_checkpoint_converts_to_dcp_and_back_with_equal_values(fabric: Fabric, tmp_path: Path) -> None:
    fabric.save(tmp_path / "full.pt", trained_state(fabric))
    original = torch.load(tmp_path / "full.pt", weights_only=True)
    stale = tmp_path / ".sharded.partial"  # what a killed conversion leaves
    stale.mkdir()

    assert (
        fabric_main(
            ["checkpoint", "convert", str(tmp_path / "full.pt"), str(tmp_path / "sharded"), "--to", "sharded"]
        )
        == 0
    )
    assert DCPFormat.detect(tmp_path / "sharded") and not stale.exists()
    assert (
        fabric_main(
            ["checkpoint", "convert", str(tmp_path / "sharded"), str(tmp_path / "back.pt"), "--to", "full"]
        )
        == 0
    )

    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert_same_state(
        back, original
    )  # optimizer state keyed by int again, as optimizer.load_state_dict needs
    restored = trained_state(fabric)
    fabric.load(tmp_path / "back.pt", restored)


def test_a_dcp_checkpoint_converts_to_one_file_and_back_with_equal_values(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    state = {
        "model": TinyModel().state_dict(),
        "step": torch.tensor(7),
        "half": torch.ones(3, dtype=torch.bfloat16),
    }
    dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp_path / "dcp"), no_dist=True)

    assert fabric_main(["checkpoint", "consolidate", str(tmp_path / "dcp"), str(tmp_path / "full.pt")]) == 0
    assert (
        fabric_main(
            ["checkpoint", "convert", str(tmp_path / "full.pt"), str(tmp_path / "again"), "--to", "sharded"]
        )
        == 0
    )

    loaded = {
        "model": {k: torch.empty_like(v) for k, v in state["model"].items()},
        "step": torch.tensor(0),
        "half": torch.zeros(3, dtype=torch.bfloat16),
    }
    dcp.load(loaded, storage_reader=dcp.FileSystemReader(tmp_path / "again"), no_dist=True)
    assert_same_state(loaded, state)
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    assert_same_state(full, state)
    assert full["half"].dtype == torch.bfloat16


def test_inspect_lists_every_tensor_with_dtype_shape_and_bytes(
    fabric: Fabric, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fabric.save(
        tmp_path / "c.pt", {"model": nn.Linear(3, 2), "half": torch.ones(4, dtype=torch.float16), "step": 5}
    )
    assert (
        fabric_main(["checkpoint", "convert", str(tmp_path / "c.pt"), str(tmp_path / "d"), "--to", "sharded"])
        == 0
    )
    capsys.readouterr()

    expected = {
        "model.weight": ("float32", [2, 3], 24),
        "model.bias": ("float32", [2], 8),
        "half": ("float16", [4], 8),
    }
    for path, fmt in ((tmp_path / "c.pt", "file"), (tmp_path / "d", "dcp")):
        assert fabric_main(["checkpoint", "inspect", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["format"] == fmt
        assert {t["name"]: (t["dtype"], t["shape"], t["bytes"]) for t in report["tensors"]} == expected
        assert report["totals"] == {"tensors": 3, "tensor_bytes": 40}
        assert "step" in {entry["name"] for entry in report["objects"]}
    assert report["world_size"] == 1

    assert fabric_main(["checkpoint", "inspect", str(tmp_path / "c.pt"), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "model.weight  float32  [2, 3]" in text and "3 tensors, 40 B" in text and "CRC" in text


def test_inspecting_a_dcp_directory_reads_only_its_metadata(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(5, 2)}, storage_writer=dcp.FileSystemWriter(tmp_path / "d"), no_dist=True)
    for shard in (tmp_path / "d").glob("*.distcp"):
        shard.write_bytes(b"")  # the tensors are gone; the metadata still describes them

    summary = DCPFormat().describe(tmp_path / "d")

    assert [(t.name, t.shape, t.nbytes) for t in summary.tensors] == [("w", (5, 2), 40)]
    (tmp_path / "d" / "__0_0.distcp").unlink()
    with pytest.raises(ValueError, match=r"is incomplete: its metadata names shard files that are not there"):
        DCPFormat().consolidate(tmp_path / "d", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_describe_file_maps_the_file_instead_of_reading_the_tensors(tmp_path: Path) -> None:
    torch.save({"big": torch.zeros(1000, 1000)}, tmp_path / "big.pt")

    summary = describe_file(tmp_path / "big.pt")

    assert [(t.name, t.dtype, t.shape, t.nbytes) for t in summary.tensors] == [
        ("big", "float32", (1000, 1000), 4_000_000)
    ]
    assert summary.files == 1 and summary.disk_bytes > 4_000_000


def test_a_non_regular_target_is_written_in_place(tmp_path: Path) -> None:
    """``/dev/null`` is written, never renamed over (as root that would replace the device)."""
    TorchCheckpointIO().save_checkpoint({"x": torch.ones(3)}, os.devnull)

    assert Path(os.devnull).is_char_device()


def test_a_model_that_does_not_fit_is_left_unchanged(fabric: Fabric, tmp_path: Path) -> None:
    torch.manual_seed(0)
    fabric.save(tmp_path / "c.pt", {"model": nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))})
    target = fabric.setup(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3)))
    before = {key: value.clone() for key, value in target.state_dict().items()}

    with pytest.raises(
        RuntimeError, match=r'Shape mismatch: "1.weight" is \[2, 2\] in the checkpoint but \[3, 2\]'
    ):
        fabric.load(tmp_path / "c.pt", {"model": target}, strict=False)

    assert_same_state(target.state_dict(), before)  # the fitting first layer was not loaded either


class OneFilePerRankFormat(CheckpointFormat):
    """A toy directory format (``rank-<r>.pt`` halves of one tensor): only detect and consolidate."""

    @staticmethod
    def detect(path: Path) -> bool:
        return (path / "rank-0.pt").is_file()

    def consolidate(self, path: Path, output: Path) -> None:
        halves = [torch.load(path / f"rank-{rank}.pt", weights_only=True) for rank in range(2)]
        with atomic_output(output) as temporary:
            torch.save({"w": torch.cat(halves)}, temporary)


def test_a_format_without_metadata_is_described_through_its_consolidated_file(tmp_path: Path) -> None:
    for rank in range(2):
        torch.save(torch.ones(3, dtype=torch.float64), tmp_path / f"rank-{rank}.pt")

    summary = OneFilePerRankFormat().describe(tmp_path)

    assert [(t.name, t.dtype, t.shape, t.nbytes) for t in summary.tensors] == [("w", "float64", (6,), 48)]
    assert summary.path == str(tmp_path) and summary.files == 2
