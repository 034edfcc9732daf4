"""Run every benchmark, print a compact report and write the results as JSON.

Usage::

    nox -s bench                          # fresh environment: torch, the plugins, lightning, accelerate
    nox -s bench -- --quick               # fewer repetitions (a few minutes on 2 cores)
    nox -s bench -- --docs                # also regenerate docs/guide/performance.md's tables and plots
    python benchmarks/run_all.py [--quick] [--only NAME ... | --all] [--no-bytecode-cache] [--markdown] [--docs]

By default the harness runs ``DEFAULT``; ``--all`` adds every other benchmark module here
(the long leak and asynchronous-save runs, discovery with 1 and 50 dummy plugins). Each
benchmark also runs on its own: ``python benchmarks/<name>.py``. Results go to
``benchmarks/results/run_all.json`` (the latest run) and a time-stamped copy next to it, the
tables to ``benchmarks/results/report.md`` and the plots to ``benchmarks/results/plots/``
(with ``--docs``: to ``docs/assets/performance/`` and into the page); ``benchmarks/results/``
is not tracked by git.
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
    REPO_ROOT,
    RESULTS_DIR,
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
from _report import markdown, plots, update_page

DEFAULT = (
    "step_overhead",
    "distributed_step",
    "footprint",
    "import_time",
    "discovery_all_plugins",
    "launch_time",
)
PAGE = REPO_ROOT / "docs" / "guide" / "performance.md"
DOCS_ASSETS = REPO_ROOT / "docs" / "assets" / "performance"


def benchmark_names() -> list[str]:
    """Every benchmark module in this directory: ``DEFAULT`` in order, then the others by name.

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
    return [name for name in DEFAULT if name in found] + sorted(found - set(DEFAULT))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/run_all.py", description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    parser.add_argument("--markdown", action="store_true", help="also print the tables in Markdown")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="write the plots to docs/assets/performance/ and the tables into docs/guide/performance.md",
    )
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--all", action="store_true", help="run every benchmark, not only the default set")
    selection.add_argument(
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
    names = args.only or [name for name in benchmark_names() if args.all or name in DEFAULT]
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
    tables = markdown(results, headlines)
    if args.markdown:
        print("\n" + tables)
    write_report(results, tables, machine, args)
    if failed:
        print(f"  FAILED to run: {', '.join(failed)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {"time": stamp, "quick": args.quick, "command": sys.argv, "machine": machine, **results}
    path = write_json("run_all", document)
    write_json(f"run_all-{stamp}", document)
    print(f"JSON: {path.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


def write_report(results: dict[str, Any], tables: str, machine: Result, args: argparse.Namespace) -> None:
    """The tables to ``results/report.md``, the plots next to them, or (``--docs``) into the docs."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "nox -s bench" + (f" -- {' '.join(sys.argv[1:])}" if sys.argv[1:] else "")
    block = (
        f"Measured on {stamp} by `{command}` (`python benchmarks/run_all.py` in that environment), "
        f"on: {_machine_line(machine)}.\n\n{tables}"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "report.md").write_text(block)
    try:
        written = plots(results, DOCS_ASSETS if args.docs else RESULTS_DIR / "plots")
    except ModuleNotFoundError as error:
        print(f"No plots: {error}. Install matplotlib (nox -s bench does).")
        written = []
    for path in written:
        print(f"plot: {path.relative_to(REPO_ROOT)}")
    if args.docs:
        update_page(PAGE, block)
        print(f"tables: {PAGE.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
