"""Helpers shared by the benchmark modules: paths, statistics, subprocesses, reports.

Every benchmark module exposes ``NAME``, ``run(quick: bool) -> dict`` (JSON-ready results)
and ``format_report(result) -> list[str]``; :func:`standalone` turns that trio into the
``python benchmarks/<name>.py`` entry point, and ``run_all.py`` calls the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CORE_PATH = REPO_ROOT / "packages" / "fabric-core"

Result = dict[str, Any]


@dataclass(frozen=True)
class Summary:
    """Robust summary of repeated measurements (all in the unit of the input)."""

    n: int
    median: float
    q25: float
    q75: float
    p10: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise ``values`` (at least one)."""
        data = sorted(values)
        if len(data) == 1:
            only = data[0]
            return cls(1, only, only, only, only, only, only, only)
        deciles = statistics.quantiles(data, n=10, method="inclusive")
        quartiles = statistics.quantiles(data, n=4, method="inclusive")
        return cls(
            n=len(data),
            median=statistics.median(data),
            q25=quartiles[0],
            q75=quartiles[2],
            p10=deciles[0],
            p90=deciles[-1],
            min=data[0],
            max=data[-1],
        )

    def as_dict(self) -> dict[str, float]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class Headline:
    """One line of the summary table: a measured figure and, where the issue sets one, its target."""

    label: str
    summary: dict[str, float]
    unit: str
    target: float | None

    @property
    def digits(self) -> int:
        """Decimals shown: three for a ratio (``x``), where 1.0 would hide the difference; else one."""
        return 3 if self.unit == "x" else 1

    def row(self) -> str:
        """``label  median unit  IQR  target``."""
        d = self.digits
        figure = f"{self.summary['median']:.{d}f} {self.unit}"
        iqr = f"IQR {self.summary['q25']:.{d}f}..{self.summary['q75']:.{d}f}"
        verdict = ""
        if self.target is not None:
            met = "met" if self.summary["median"] <= self.target else "MISSED"
            verdict = f"target <= {self.target:g} {self.unit}: {met}"
        return f"  {self.label:<48} {figure:>11}  {iqr:<18} {verdict}"

    def markdown_row(self) -> str:
        """The same as a Markdown table row (see ``MARKDOWN_HEADER``)."""
        s, d = self.summary, self.digits
        target = "" if self.target is None else f"≤ {self.target:g} {self.unit}"
        return (
            f"| {self.label} | {s['median']:.{d}f} {self.unit} | {s['q25']:.{d}f} .. {s['q75']:.{d}f} "
            f"| {s['p10']:.{d}f} .. {s['p90']:.{d}f} | {target} |"
        )


MARKDOWN_HEADER = "| measurement | median | IQR | p10 .. p90 | target |\n|---|---:|---:|---:|---|"


def summarize(values: Sequence[float]) -> dict[str, float]:
    """:meth:`Summary.of` as a JSON-ready dict."""
    return Summary.of(values).as_dict()


def spread(summary: dict[str, float], unit: str, digits: int = 1) -> str:
    """``"12.3 unit (IQR 10.1..14.0, p10-p90 9.0..15.2)"`` for a summary dict."""
    f = f"{{:.{digits}f}}"
    return (
        f"{f.format(summary['median'])} {unit} (IQR {f.format(summary['q25'])}..{f.format(summary['q75'])}, "
        f"p10-p90 {f.format(summary['p10'])}..{f.format(summary['p90'])}, n={int(summary['n'])})"
    )


def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> Result:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": package_version("torch"),
        "fabric_core": package_version("fabric-core"),
        "executable": sys.executable,
        "bytecode_cache": bytecode_cache(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_python(
    code: str, python: str | Path = sys.executable, env: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[float, str]:
    """Run ``python -c code`` in a fresh process; return (wall seconds, stdout).

    Raises:
        RuntimeError: The process exited with a non-zero status (its stderr is included).
    """
    start = time.perf_counter()
    completed = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(
            f"{python} -c {code!r} exited with {completed.returncode}:\n{completed.stderr.strip()[-2000:]}"
        )
    return wall, completed.stdout


BYTECODE_VARIABLE = "FABRIC_BENCH_BYTECODE"
"""Set to ``off`` (``--no-bytecode-cache``) to make child interpreters compile every module."""


def bytecode_cache() -> bool:
    """Whether child interpreters read and write ``.pyc`` files (the default)."""
    return os.environ.get(BYTECODE_VARIABLE, "on").lower() not in {"off", "0", "no", "false"}


def child_env(bytecode: bool | None = None, **extra: str) -> dict[str, str]:
    """The environment for child interpreters: the current one, with a defined bytecode cache.

    By default ``.pyc`` files are used, as in an ordinary installation, even where the
    machine sets ``PYTHONDONTWRITEBYTECODE``: they are kept under ``benchmarks/results/pycache``
    (``PYTHONPYCACHEPREFIX``), so neither site-packages nor the source tree is written to, and
    the first (warm-up) run fills them. With ``FABRIC_BENCH_BYTECODE=off`` (or ``bytecode=False``)
    the prefix is an empty directory that is never written, so every module is compiled in
    every process; ``bytecode`` given overrides the variable.
    """
    skip = {"PYTHONPROFILEIMPORTTIME", "PYTHONSTARTUP", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}
    env = {key: value for key, value in os.environ.items() if key not in skip}
    if bytecode_cache() if bytecode is None else bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(RESULTS_DIR / "pycache")
    else:
        empty = RESULTS_DIR / "pycache-empty"
        empty.mkdir(parents=True, exist_ok=True)
        env["PYTHONPYCACHEPREFIX"] = str(empty)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def load_average() -> float | None:
    """The one-minute load average (``None`` where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds used by this process and the children it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def write_json(name: str, data: Result) -> Path:
    """Write ``data`` to ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def write_script_json(path: Path, args: argparse.Namespace, result: Any) -> None:
    """The ``--json PATH`` document of a script-style benchmark: the machine, its arguments, its result."""
    payload = {"machine": machine_info(), "args": vars(args), "result": result}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def make_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command-line parser of ``python benchmarks/<name>.py`` (modules may add options)."""
    parser = argparse.ArgumentParser(
        prog=f"benchmarks/{name}.py",
        description=(doc or "").split("\n\n")[0],
    )
    add_common_options(parser)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--no-bytecode-cache`` (read back with :func:`apply_common_options`)."""
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a rough figure, faster)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="child interpreters compile every module (as with PYTHONDONTWRITEBYTECODE and no .pyc files)",
    )


def apply_common_options(args: argparse.Namespace) -> None:
    """Export ``--no-bytecode-cache`` to :func:`child_env` through the environment."""
    if args.no_bytecode_cache:
        os.environ[BYTECODE_VARIABLE] = "off"


def timed(run: Callable[[bool], Result], quick: bool) -> Result:
    """``run(quick)`` with its duration and how busy other processes kept the CPU meanwhile.

    ``other_cpu_cores`` is the average number of cores that processes other than the benchmark
    (and its children) used while it ran, from ``/proc/stat``; ``None`` off Linux.
    """
    busy_before, own_before = _busy_cpu_seconds(), _own_cpu_seconds()
    start = time.perf_counter()
    result = run(quick)
    wall = time.perf_counter() - start
    busy_after, own_after = _busy_cpu_seconds(), _own_cpu_seconds()
    result["seconds"] = round(wall, 1)
    if busy_before is not None and busy_after is not None and wall > 0:
        others = (busy_after - busy_before - (own_after - own_before)) / wall
        result["other_cpu_cores"] = round(max(others, 0.0), 2)
    else:
        result["other_cpu_cores"] = None
    return result


def load_warning(result: Result, limit: float = 0.25) -> str | None:
    """A warning line when other processes used more than ``limit`` cores during ``result``."""
    others = result.get("other_cpu_cores")
    if others is not None and others > limit:
        return (
            f"  WARNING: other processes used {others:.2f} CPU cores on average while this ran; "
            "the figures are less reliable, rerun on a quiet machine"
        )
    return None


def standalone(
    name: str, run: Callable[[bool], Result], format_report: Callable[[Result], list[str]], quick: bool
) -> int:
    """Body of ``python benchmarks/<name>.py``: run, print the report, write the JSON."""
    result = timed(run, quick)
    print("\n".join(format_report(result)))
    warning = load_warning(result)
    if warning:
        print(warning)
    path = write_json(name, {"machine": machine_info(), name: result})
    print(f"({result['seconds']} s; JSON: {path.relative_to(REPO_ROOT)})")
    return 0
