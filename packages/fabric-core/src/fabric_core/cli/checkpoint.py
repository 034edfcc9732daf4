"""``fabric checkpoint inspect|convert|consolidate``: look into a checkpoint, or change its layout.

- ``inspect PATH [--json]``: the format, the strategy and world size where recorded, and
  every tensor (name, dtype, shape, bytes) with totals. A DCP directory is described from
  its ``.metadata`` alone; a single file is memory-mapped, so tensor bytes are not read.
  ``--verify`` also checks a single file's CRCs (reads every byte).
- ``convert SRC DST --to full``: a sharded directory (DCP, DeepSpeed, xla_fsdp) as one
  ``torch.save`` file. ``consolidate SRC DST`` is the same command.
- ``convert SRC DST --to sharded``: one ``torch.save`` file as a DCP directory.

Every output appears under its name only once complete. A mistake (a path that does not
exist, a directory that is not a checkpoint, a damaged file) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric_core.io.formats import CheckpointFormat

__all__ = ["add_arguments", "run_checkpoint"]

_PROG = "fabric checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``checkpoint`` subcommands to ``parser``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = actions.add_parser(
        "inspect",
        help="Show a checkpoint's format, world size and tensors (dtype, shape, bytes).",
        description="Show a checkpoint's format, strategy and world size where recorded, and every tensor "
        "with its dtype, shape and size, without loading the tensors.",
    )
    inspect.add_argument("path", type=Path, help="the checkpoint file or directory")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.add_argument("--format", help="the checkpoint format of a directory (default: detected)")
    inspect.add_argument(
        "--verify", action="store_true", help="also check the CRC of every record of a single file"
    )
    convert = actions.add_parser(
        "convert",
        help="Write a checkpoint in another layout: one file (--to full) or a DCP directory (--to sharded).",
        description="Write a sharded checkpoint directory as one torch.save file (--to full), or one "
        "torch.save file as a torch.distributed.checkpoint directory (--to sharded).",
    )
    convert.add_argument("path", type=Path, help="the checkpoint to read")
    convert.add_argument("output", type=Path, help="where to write the converted checkpoint")
    convert.add_argument("--to", required=True, choices=["full", "sharded"], help="the layout to write")
    convert.add_argument("--format", help="the format of a sharded directory (default: detected)")
    consolidate = actions.add_parser(
        "consolidate",
        help="Same as `convert PATH OUTPUT --to full`.",
        description="Write a sharded checkpoint directory (DCP, DeepSpeed ZeRO, ...) as one torch.save file.",
    )
    consolidate.add_argument("path", type=Path, help="the checkpoint directory")
    consolidate.add_argument("output", type=Path, help="the file to write")
    consolidate.add_argument("--format", help="the checkpoint format (default: detected)")


class _Mistake(Exception):
    """A user mistake: printed as one line, exit status 2."""


def run_checkpoint(args: argparse.Namespace) -> int:
    """Run the ``checkpoint`` subcommand and return the exit status."""
    try:
        if not args.path.exists():
            raise _Mistake(_missing(args.path))
        if args.action == "inspect":
            return _inspect(args)
        target = "full" if args.action == "consolidate" else args.to
        return _convert_to_full(args) if target == "full" else _convert_to_sharded(args)
    except BrokenPipeError:  # the reader stopped early (`... | head`): not an error of the checkpoint
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except _Mistake as mistake:
        print(f"{_PROG}: {mistake}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as error:
        # fabric's checkpoint errors already say what to do; anything else gets its type named
        print(
            f"{_PROG}: {error if _from_fabric(error) else f'{type(error).__name__}: {error}'}",
            file=sys.stderr,
        )
        return 2


def _from_fabric(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and "fabric_" in traceback.tb_frame.f_code.co_filename


def _missing(path: Path) -> str:
    from fabric_core.io.diagnose import missing_checkpoint

    return missing_checkpoint(path, advice="Pass the path fabric.save() wrote.").strerror or ""


def _format_of(path: Path, name: str | None) -> tuple[str, CheckpointFormat]:
    """The format of the directory ``path``: ``name`` if given, else the one detected."""
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
    from fabric_core.io.detection import detect_format

    name = name or detect_format(path)
    if name is None:
        known = ", ".join(CHECKPOINT_FORMAT_REGISTRY.available())
        holds = sorted(p.name for p in path.iterdir())
        content = (
            f"it holds {', '.join(holds[:5])}{' ...' if len(holds) > 5 else ''}" if holds else "it is empty"
        )
        raise _Mistake(
            f"'{path}' is a directory but not a checkpoint in a format fabric knows ({content}; known formats: "
            f"{known}). A DCP directory has a .metadata file; DeepSpeed checkpoints need fabric-deepspeed installed."
        )
    return name, _build(name)


def _build(name: str) -> CheckpointFormat:
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
    from fabric_core.io.formats import CheckpointFormat
    from fabric_core.registry import RegistryError

    try:
        built = CHECKPOINT_FORMAT_REGISTRY.build(name)
    except RegistryError as error:
        raise _Mistake(str(error)) from error
    assert isinstance(built, CheckpointFormat)
    return built


def _inspect(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
    from fabric_core.io.diagnose import damage
    from fabric_core.io.manifest import read_manifest
    from fabric_core.io.summary import describe_file

    path: Path = args.path
    if path.is_dir():
        name, found = _format_of(path, args.format)
        summary = found.describe(path)
        summary = replace(
            summary, format=name, description=CHECKPOINT_FORMAT_REGISTRY.entry(name).description
        )
        manifest = read_manifest(path)
        if manifest is not None:  # what the writer recorded beats what the layout suggests
            summary = replace(
                summary,
                strategy=manifest.strategy,
                world_size=manifest.world_size,
                notes=(*summary.notes, f"manifest: {manifest.describe()}"),
            )
    else:
        summary = describe_file(path)
        if args.verify:
            problem = damage(path)
            if problem is not None:
                raise ValueError(f"'{path}': {problem}.")
            summary = replace(summary, notes=(*summary.notes, "every record passed its CRC check"))
    print(json.dumps(summary.to_json(), indent=2) if args.json else summary.to_text())
    return 0


def _convert_to_full(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_dir():
        raise _Mistake(
            f"'{path}' is already a single file; --to full converts a sharded checkpoint directory."
        )
    name, found = _format_of(path, args.format)
    found.consolidate(path, args.output)
    print(f"Wrote {args.output} (one torch.save file) from the {name} checkpoint {path}.")
    return 0


def _convert_to_sharded(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.is_dir():
        raise _Mistake(
            f"'{path}' is a directory; --to sharded converts one torch.save file. To change a sharded "
            "checkpoint's format, convert it --to full first."
        )
    name = args.format or "dcp"
    found = _build(name)
    try:
        found.from_file(path, args.output)
    except NotImplementedError as error:
        raise _Mistake(f"The {name} format cannot be written from a single file ({error})") from error
    print(f"Wrote {args.output} (a {name} directory) from {path}.")
    return 0
