"""The ``fabric`` command line.

``fabric --help`` and the parser import neither torch nor any plugin; each command
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fabric_core.cli import checkpoint as checkpoint_command
from fabric_core.cli import estimate as estimate_command
from fabric_core.cli import plugin_scaffold as plugin_command
from fabric_core.cli import run as run_command

__all__ = ["build_parser", "main"]

_LISTINGS = {
    "strategies": "List every registered strategy and whether it can be built here.",
    "plugins": "List the installed plugin distributions and their status.",
    "env": "Print what a bug report needs: versions, devices, plugins, environment.",
}
_MODULES = {name: "fabric_core.cli.listing" for name in _LISTINGS} | {
    "run": "fabric_core.cli.run",
    "checkpoint": "fabric_core.cli.checkpoint",
    "estimate": "fabric_core.cli.estimate",
    "plugin": "fabric_core.cli.plugin_scaffold",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fabric`` command."""
    from fabric_core.__about__ import __version__

    parser = argparse.ArgumentParser(
        prog="fabric",
        description="Scale a PyTorch training loop from one CPU to many GPUs and nodes. "
        "`python -m fabric_core` is the same command, and works even where another "
        "distribution's `fabric` command comes first on the PATH.",
    )
    parser.add_argument("--version", action="version", version=f"fabric-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_help = "Run a script in one process per device (on this node), under PyTorch's elastic agent."
    run_parser = commands.add_parser("run", help=run_help, description=run_command.__doc__)
    run_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    run_command.add_arguments(run_parser)
    checkpoint_help = "Work with checkpoints: inspect one, or convert it between full and sharded."
    checkpoint_parser = commands.add_parser("checkpoint", help=checkpoint_help, description=checkpoint_help)
    checkpoint_command.add_arguments(checkpoint_parser)
    estimate_help = "Estimate per-rank memory of parameters, gradients and optimizer state, before a run."
    estimate_parser = commands.add_parser(
        "estimate", help=estimate_help, description=estimate_command.__doc__
    )
    estimate_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    estimate_command.add_arguments(estimate_parser)
    plugin_help = "Write a new strategy plugin to start from: fabric plugin new NAME."
    plugin_parser = commands.add_parser("plugin", help=plugin_help, description=plugin_help)
    plugin_command.add_arguments(plugin_parser)
    for name, help_text in _LISTINGS.items():
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
    _warn_about_other_fabric_commands()
    module = importlib.import_module(_MODULES[args.command])
    return int(getattr(module, f"run_{args.command}")(args))


def other_fabric_commands() -> list[str]:
    """The distributions other than fabric-core that install a ``fabric`` command (e.g. ``lightning``)."""
    from importlib.metadata import entry_points

    return sorted(
        {
            entry.dist.name if entry.dist is not None else entry.value
            for entry in entry_points(group="console_scripts", name="fabric")
            if not entry.value.startswith("fabric_core")
        }
    )


def _warn_about_other_fabric_commands() -> None:
    others = other_fabric_commands()
    if others:
        print(
            f"fabric: {', '.join(others)} also install(s) a `fabric` command; which one runs depends on the "
            "order of installation. `python -m fabric_core ...` always runs this one.",
            file=sys.stderr,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
