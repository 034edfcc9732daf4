"""``fabric plugin new NAME``: write a working third-party strategy plugin to start from.

The new directory ``fabric-NAME/`` holds a distribution that fabric discovers once it is
installed: ``pyproject.toml`` (the ``fabric`` entry point, hatchling, the dependencies),
``README.md``, ``LICENSE`` (a note to replace), ``src/fabric_NAME/`` (a lazy ``__init__``, the
entry-point module ``plugin.py`` with the registrations only, and ``strategy.py`` with a
strategy subclass that clips gradients) and ``tests/test_conformance.py`` (fabric-core's
conformance kit). ``pip install -e ".[test]"`` and ``pytest`` in it pass as written.

Nothing here imports torch or discovers plugins: the names a plugin must not take are
fabric's first-party names, known without loading anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from fabric_core._first_party import STRATEGY_PROVIDERS

__all__ = ["PluginScaffold", "ScaffoldError", "add_arguments", "check_name", "run_plugin", "scaffold_plugin"]

CORE_STRATEGIES = ("single_device", "dp")
"""The strategy names fabric-core registers itself."""

FIRST_PARTY_PREFIXES = ("ddp", "fsdp", "deepspeed", "xla")
"""The first-party distributions (fabric-ddp, ...), whose entry points and name families these are."""

RESERVED_PLUGIN_NAMES = ("core", *FIRST_PARTY_PREFIXES)
"""Entry-point names of fabric-core's own registrations and of the first-party plugins."""

_DESCRIPTION = """\
Write a working third-party strategy plugin, fabric-NAME/, to start from:

  pyproject.toml                the distribution: the `fabric` entry point, hatchling, dependencies
  README.md, LICENSE            how to use and develop it; a note to choose a license
  src/fabric_NAME/__init__.py   the strategy class, imported lazily (no torch at import)
  src/fabric_NAME/plugin.py     the entry point: registrations only
  src/fabric_NAME/strategy.py   a strategy subclass that clips gradients in optimizer_step
  tests/test_conformance.py     fabric-core's conformance kit

NAME is the strategy name: lowercase letters, digits and single underscores (my_sgd gives
the package fabric_my_sgd and the distribution fabric-my-sgd). Then, in fabric-NAME/:
pip install -e ".[test]" and pytest.
"""

_VALID_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


class ScaffoldError(ValueError):
    """``fabric plugin new`` cannot write the plugin; the message says why and what to do instead."""


@dataclass(frozen=True)
class PluginScaffold:
    """What `scaffold_plugin` wrote.

    Attributes:
        root: The new plugin's directory, ``.../fabric-NAME``.
        files: The files written, relative to ``root``, in the order written.
        strategy_names: The strategy names the plugin registers once installed.
        base: ``"ddp"`` or ``"single"``.
    """

    root: Path
    files: tuple[str, ...]
    strategy_names: tuple[str, ...]
    base: str


def check_name(name: str, base: str = "ddp") -> None:
    """Refuse a plugin name that is malformed or would clash with fabric's own names.

    The name becomes the strategy name, the entry-point name, the package ``fabric_NAME``
    and the distribution ``fabric-NAME``; for ``base="ddp"`` the plugin also registers
    ``NAME_spawn`` and ``NAME_fork``.

    Raises:
        ScaffoldError: Why the name cannot be used, with a name that can.
    """
    if not isinstance(name, str) or not _VALID_NAME.fullmatch(name):
        suggestion = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", str(name).lower())).strip("_")
        hint = f" (e.g. '{suggestion}')" if suggestion and _VALID_NAME.fullmatch(suggestion) else ""
        raise ScaffoldError(
            f"'{name}' is not a valid plugin name: use lowercase letters, digits and single underscores, "
            f"starting with a letter{hint}. It becomes the strategy name, the package fabric_NAME and the "
            "distribution fabric-NAME."
        )
    if name == "fabric" or name.startswith("fabric_"):
        rest = name.removeprefix("fabric").lstrip("_") or "my_strategy"
        raise ScaffoldError(
            f"'{name}': leave out the 'fabric' prefix, which fabric plugin new adds itself (the package "
            f"fabric_{rest}, the distribution fabric-{rest.replace('_', '-')}); pass '{rest}'. The package name "
            "'fabric' on its own is reserved: it belongs to an unrelated library on the package index."
        )
    names = (name, f"{name}_spawn", f"{name}_fork") if base == "ddp" else (name,)
    first_party = {**dict.fromkeys(CORE_STRATEGIES, "fabric-core"), **STRATEGY_PROVIDERS}
    taken = [candidate for candidate in names if candidate in first_party]
    if taken:
        raise ScaffoldError(
            f"'{name}' clashes with the strategy name '{taken[0]}' of {first_party[taken[0]]}: a plugin "
            f"registering a taken name fails as a whole. Choose a name with a prefix of your own, e.g. "
            f"'myorg_{name}'."
        )
    if name in RESERVED_PLUGIN_NAMES:
        raise ScaffoldError(
            f"'{name}' is the plugin name of fabric's own registrations, which FABRIC_DISABLE_PLUGINS and "
            f"FABRIC_LOAD_PLUGINS refer to. Choose a name with a prefix of your own, e.g. 'myorg_{name}'."
        )
    prefix = next((p for p in FIRST_PARTY_PREFIXES if name.startswith(f"{p}_")), None)
    if prefix is not None:
        raise ScaffoldError(
            f"'{name}' begins with '{prefix}_', the prefix of fabric-{prefix}'s strategy names. The registry "
            f"does not reserve it, but a later fabric-{prefix} name could take yours, and then whichever plugin "
            f"loads second fails. Choose a prefix of your own, e.g. 'myorg_{name.removeprefix(prefix + '_')}'."
        )


def scaffold_plugin(name: str, parent: str | Path = ".", base: str = "ddp") -> PluginScaffold:
    """Write a new strategy plugin ``fabric-NAME/`` under ``parent``.

    Args:
        name: The strategy name (``"my_sgd"``), checked by `check_name`.
        parent: The directory to create ``fabric-NAME/`` in (created if missing).
        base: ``"ddp"``: a `DDPStrategy` subclass (depends on fabric-ddp), registered as
            ``NAME``, ``NAME_spawn`` and ``NAME_fork``. ``"single"``: a
            `SingleDeviceStrategy` subclass, registered as ``NAME``.

    Returns:
        Where the plugin is and what was written.

    Raises:
        ScaffoldError: The name or base is refused, or the directory exists and is not empty.
    """
    from fabric_core.__about__ import __version__
    from fabric_core.cli._scaffold_templates import PluginNames, render

    if base not in ("ddp", "single"):
        raise ScaffoldError(f"base={base!r} is not known: use 'ddp' (a DDPStrategy subclass) or 'single'.")
    check_name(name, base)
    names = PluginNames(name, "ddp" if base == "ddp" else "single", __version__)
    root = Path(parent) / names.distribution
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        what = "is not empty" if root.is_dir() else "exists and is not a directory"
        raise ScaffoldError(
            f"{root} {what}: nothing was written. Remove it, pass another --dir, or choose another name."
        )
    files = render(names)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return PluginScaffold(root, tuple(files), names.strategy_names, base)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fabric plugin``'s subcommands to ``parser``."""
    commands = parser.add_subparsers(dest="plugin_command", metavar="COMMAND")
    new_help = "Write a new strategy plugin fabric-NAME/ (package, entry point, strategy, conformance test)."
    new = commands.add_parser("new", help=new_help, description=_DESCRIPTION)
    new.formatter_class = argparse.RawDescriptionHelpFormatter
    new.add_argument("name", metavar="NAME", help="the strategy name, e.g. my_sgd (lowercase, underscores)")
    new.add_argument(
        "--dir", default=".", metavar="PATH", help="where to create fabric-NAME/ (default: here)"
    )
    new.add_argument(
        "--base",
        choices=("ddp", "single"),
        default="ddp",
        help="subclass DDPStrategy (one process per device; default) or SingleDeviceStrategy",
    )


def run_plugin(args: argparse.Namespace) -> int:
    """Run ``fabric plugin ...`` and return its exit status."""
    if getattr(args, "plugin_command", None) != "new":
        print(
            "fabric plugin: name a command: fabric plugin new NAME [--dir PATH] [--base ddp|single]",
            file=sys.stderr,
        )
        return 2
    try:
        result = scaffold_plugin(args.name, args.dir, args.base)
    except ScaffoldError as error:
        print(f"fabric plugin new: {error}", file=sys.stderr)
        return 2
    print(f"Wrote the strategy plugin {result.root}:")
    for relative in result.files:
        print(f"  {relative}")
    print("\nNext:")
    print(f"  cd {result.root}")
    print('  pip install -e ".[test]"      # or: uv pip install -e ".[test]"')
    print(f"  fabric strategies             # lists {', '.join(result.strategy_names)}")
    print("  pytest                        # the conformance kit, tests/test_conformance.py")
    return 0
