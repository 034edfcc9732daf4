"""The ``fabric`` command line.

``fabric --help`` and the parser import neither torch nor any plugin; each command
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_COMMANDS = {
    "strategies": ("fabric_core.cli.listing", "List every registered strategy and whether it can be built here."),
    "plugins": ("fabric_core.cli.listing", "List the installed plugin distributions and their status."),
    "env": ("fabric_core.cli.listing", "Print what a bug report needs: versions, devices, plugins, environment."),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fabric`` command."""
    parser = argparse.ArgumentParser(
        prog="fabric",
        description="Scale a PyTorch training loop from one CPU to many GPUs and nodes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fabric`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(_COMMANDS[args.command][0])
    return int(getattr(module, f"run_{args.command}")(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
