"""Run every benchmark, print a compact report and write the results as JSON.

Usage::

    nox -s bench                          # fresh environment with torch, uv and fabric-core
    nox -s bench -- --quick               # fewer repetitions
    python benchmarks/run_all.py [--quick] [--only NAME ...] [--no-bytecode-cache] [--markdown]

Each benchmark also runs on its own: ``python benchmarks/<name>.py``. Results go to
``benchmarks/results/run_all.json`` (the latest run) and a time-stamped copy next to it;
``benchmarks/results/`` is not tracked by git.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MARKDOWN_HEADER,
    REPO_ROOT,
    Headline,
    Result,
    add_common_options,
    apply_common_options,
    load_average,
    load_warning,
    machine_info,
    timed,
    write_json,
)

FIRST = ("step_overhead", "import_time", "discovery_time")


def benchmark_names() -> list[str]:
    """Every benchmark module in this directory: ``FIRST`` in order, then the others by name.

    A benchmark module is a ``*.py`` file here, other than this one and those whose name
    starts with ``_``, that defines ``run(quick)`` and ``format_report(result)`` (and
    optionally ``headlines(result)``); scripts of another shape are left alone.
    """
    here = Path(__file__).resolve().parent
    found = {
        path.stem
        for path in here.glob("*.py")
        if not path.stem.startswith("_")
        and path.stem != "run_all"
        and all(f"\ndef {function}(" in path.read_text() for function in ("run", "format_report"))
    }
    return [name for name in FIRST if name in found] + sorted(found - set(FIRST))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/run_all.py", description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    parser.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=benchmark_names(),
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(benchmark_names())})",
    )
    return parser


def _machine_line(machine: Result) -> str:
    return (
        f"{machine['processor']} ({machine['cpu_count']} cores, {machine['machine']}), "
        f"Python {machine['python']}, torch {machine['torch']}, fabric-core {machine['fabric_core']}, "
        f"bytecode cache {'on' if machine['bytecode_cache'] else 'off'}, load average {load_average()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; exit 1 if any of them failed to run (never for a missed target)."""
    args = _parser().parse_args(argv)
    apply_common_options(args)
    names = args.only or benchmark_names()
    machine = machine_info()
    print(f"fabric-core benchmarks{' (quick)' if args.quick else ''}: {_machine_line(machine)}")
    results: dict[str, Any] = {}
    headlines: list[Headline] = []
    failed: list[str] = []
    for name in names:
        print(f"\n[{name}]", flush=True)
        try:
            module = importlib.import_module(name)
            result = timed(module.run, args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        results[name] = result
        headlines += getattr(module, "headlines", lambda _: [])(result)
        print("\n".join(module.format_report(result)))
        warning = load_warning(result)
        print(f"  ({result['seconds']} s)" + (f"\n{warning}" if warning else ""), flush=True)
    print("\nSummary (medians; lower is better)")
    print("\n".join(headline.row() for headline in headlines))
    if args.markdown:
        print("\n" + "\n".join([MARKDOWN_HEADER, *(headline.markdown_row() for headline in headlines)]))
    if failed:
        print(f"  FAILED to run: {', '.join(failed)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {"time": stamp, "quick": args.quick, "command": sys.argv, "machine": machine, **results}
    path = write_json("run_all", document)
    write_json(f"run_all-{stamp}", document)
    print(f"JSON: {path.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
