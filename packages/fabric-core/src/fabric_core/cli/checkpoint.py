"""``fabric checkpoint consolidate DIR OUT``: turn a sharded checkpoint into one file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run_checkpoint"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``checkpoint`` subcommands to ``parser``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    consolidate = actions.add_parser(
        "consolidate",
        help="Write a sharded checkpoint directory as one file that torch.load reads.",
        description="Write a sharded checkpoint directory (DCP, DeepSpeed ZeRO, ...) as one torch.save file.",
    )
    consolidate.add_argument("path", type=Path, help="the checkpoint directory")
    consolidate.add_argument("output", type=Path, help="the file to write")
    consolidate.add_argument("--format", help="the checkpoint format (default: detected)")


def run_checkpoint(args: argparse.Namespace) -> int:
    """Consolidate the checkpoint and return the exit status."""
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
    from fabric_core.registry import RegistryError

    if not args.path.exists():
        print(f"fabric checkpoint: '{args.path}' does not exist.", file=sys.stderr)
        return 2
    try:
        name = args.format or _detect(args.path)
        checkpoint_format = CHECKPOINT_FORMAT_REGISTRY.build(name)
    except RegistryError as error:
        print(f"fabric checkpoint: {error}", file=sys.stderr)
        return 2
    checkpoint_format.consolidate(args.path, args.output)
    print(f"Wrote {args.output} from the {name} checkpoint {args.path}.")
    return 0


def _detect(path: Path) -> str:
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
    from fabric_core.registry import RegistryError

    for name in CHECKPOINT_FORMAT_REGISTRY.available():
        if CHECKPOINT_FORMAT_REGISTRY.get_class(name).detect(path):
            return name
    known = ", ".join(CHECKPOINT_FORMAT_REGISTRY.available())
    raise RegistryError(
        f"'{path}' is not a checkpoint format fabric knows (known: {known}). DeepSpeed ZeRO checkpoints "
        "need fabric-deepspeed installed; a single file needs no consolidation."
    )
