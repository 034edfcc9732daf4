"""Import cost of fabric_core on top of torch, and start-up cost of the ``fabric`` command.

Each measurement is a fresh interpreter (``python -c ...``), so nothing is cached in
``sys.modules``. The variants run interleaved, one of each per round in a rotating order,
after an untimed warm-up:

- ``import torch``
- ``import torch, fabric_core``
- ``import torch; from fabric_core import Fabric``

Two figures are reported for each fabric variant: the median over rounds of the difference
in wall time to the bare-torch process of the same round (what the issue asks for; torch's
own import (1.5 s or more) varies by far more than the difference, so it is noisy), and the
median of the time the extra import statement takes inside its process, measured with
``time.perf_counter`` right after ``import torch`` (the precise figure; its process CPU
time is recorded as ``in_process_cpu_ms``, robust to competing processes). Each child also
reports whether ``torch._dynamo`` ended up in ``sys.modules``.

The ``fabric --help`` command is timed the same way against a bare ``python -c pass``,
and checked not to import torch. ``-X importtime`` runs list the modules that dominate
``from fabric_core import Fabric`` (over ``import torch``) and ``fabric --help`` (over a bare
interpreter).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Headline,
    Result,
    apply_common_options,
    child_env,
    make_parser,
    run_python,
    standalone,
    summarize,
)

NAME = "import_time"
ROUNDS = 15
QUICK_ROUNDS = 5
TARGET_MS = 25.0

_TIMED_IMPORT = """\
import sys, time
t0 = time.perf_counter()
import torch
t1, c1 = time.perf_counter(), time.process_time()
{statement}
t2, c2 = time.perf_counter(), time.process_time()
print(t1 - t0, t2 - t1, c2 - c1, "torch._dynamo" in sys.modules)
"""

IMPORT_VARIANTS = {
    "import torch": "pass",
    "import torch, fabric_core": "import fabric_core",
    "import torch; from fabric_core import Fabric": "from fabric_core import Fabric",
}

_CLI_HELP = """\
import contextlib, io, sys
sys.argv = ["fabric", "--help"]
from fabric_core.cli import main
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        main()
    except SystemExit:
        pass
print("torch" in sys.modules, "usage: fabric" in help_text.getvalue())
"""

_BARE_FABRIC_CORE = 'import sys, fabric_core; print("torch" in sys.modules)'

CLI_VARIANTS = {"python -c pass": "pass", "fabric --help": _CLI_HELP}


def _rotations(names: list[str], rounds: int) -> list[list[str]]:
    orders = []
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        if (index // len(names)) % 2:
            order.reverse()
        orders.append(order)
    return orders


def measure_imports(rounds: int) -> Result:
    """Interleaved fresh-process imports; wall times and in-process marginal times."""
    env = child_env()
    names = list(IMPORT_VARIANTS)
    codes = {name: _TIMED_IMPORT.format(statement=statement) for name, statement in IMPORT_VARIANTS.items()}
    run_python(codes[names[-1]], env=env)  # warm-up: brings torch's files into the page cache
    wall: dict[str, list[float]] = {name: [] for name in names}
    torch_s: dict[str, list[float]] = {name: [] for name in names}
    extra_s: dict[str, list[float]] = {name: [] for name in names}
    extra_cpu: dict[str, list[float]] = {name: [] for name in names}
    dynamo: dict[str, bool] = dict.fromkeys(names, False)
    for order in _rotations(names, rounds):
        for name in order:
            seconds, output = run_python(codes[name], env=env)
            torch_time, extra_time, cpu_time, has_dynamo = output.split()
            wall[name].append(seconds * 1e3)
            torch_s[name].append(float(torch_time) * 1e3)
            extra_s[name].append(float(extra_time) * 1e3)
            extra_cpu[name].append(float(cpu_time) * 1e3)
            dynamo[name] = dynamo[name] or has_dynamo == "True"
    baseline = names[0]
    variants: Result = {}
    for name in names:
        entry: Result = {
            "wall_ms": summarize(wall[name]),
            "torch_import_ms": summarize(torch_s[name]),
            "torch_dynamo_imported": dynamo[name],
        }
        if name != baseline:
            entry["wall_difference_ms"] = summarize(
                [a - b for a, b in zip(wall[name], wall[baseline], strict=True)]
            )
            entry["in_process_ms"] = summarize(extra_s[name])
            entry["in_process_cpu_ms"] = summarize(extra_cpu[name])
        variants[name] = entry
    return variants


def measure_cli(rounds: int) -> Result:
    """``fabric --help`` vs a bare interpreter, interleaved; checks that torch stays out."""
    env = child_env()
    names = list(CLI_VARIANTS)
    for name in names:
        run_python(CLI_VARIANTS[name], env=env)
    wall: dict[str, list[float]] = {name: [] for name in names}
    torch_imported = False
    help_printed = True
    for order in _rotations(names, rounds):
        for name in order:
            seconds, output = run_python(CLI_VARIANTS[name], env=env)
            wall[name].append(seconds * 1e3)
            if name == "fabric --help":
                has_torch, printed = output.split()
                torch_imported = torch_imported or has_torch == "True"
                help_printed = help_printed and printed == "True"
    _, bare = run_python(_BARE_FABRIC_CORE, env=env)
    return {
        "wall_ms": {name: summarize(values) for name, values in wall.items()},
        "difference_ms": summarize(
            [a - b for a, b in zip(wall["fabric --help"], wall["python -c pass"], strict=True)]
        ),
        "torch_imported": torch_imported,
        "help_printed": help_printed,
        "bare_import_fabric_core_imports_torch": bare.strip() == "True",
    }


def _importtime(code: str) -> dict[str, tuple[int, int]]:
    """``{module: (self µs, cumulative µs)}`` from one ``python -X importtime -c code`` run."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    )
    modules: dict[str, tuple[int, int]] = {}
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, cumulative, module = (part.strip() for part in line.removeprefix("import time:").split("|"))
            if own.isdigit():
                modules[module] = (int(own), int(cumulative))
    return modules


def extra_imports(baseline: str, code: str, top: int = 6) -> Result:
    """The modules ``code`` imports that ``baseline`` does not, by self time (one run each).

    ``-X importtime`` slows every import down, so the totals are larger than the timings
    above; they show where the time goes, not how much there is.
    """
    before = _importtime(baseline)
    after = _importtime(code)
    rows = sorted(((own, module) for module, (own, _) in after.items() if module not in before), reverse=True)
    return {
        "modules": len(rows),
        "total_self_ms": sum(own for own, _ in rows) / 1e3,
        "outside_fabric_core": sorted(module for _, module in rows if not module.startswith("fabric_core")),
        "top_self_ms": {module: own / 1e3 for own, module in rows[:top]},
    }


def run(quick: bool = False) -> Result:
    """Import and CLI start-up measurements; ``quick`` uses fewer rounds."""
    rounds = QUICK_ROUNDS if quick else ROUNDS
    return {
        "config": {"rounds": rounds, "python": sys.executable},
        "imports": measure_imports(rounds),
        "cli": measure_cli(rounds),
        "importtime": {
            "from fabric_core import Fabric (after import torch)": extra_imports(
                "import torch", "import torch\nfrom fabric_core import Fabric"
            ),
            "fabric --help (over python -c pass)": extra_imports("pass", _CLI_HELP),
        },
        "target_ms": TARGET_MS,
    }


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    imports = result["imports"]
    return [
        Headline(
            "import fabric_core after torch (in-process)",
            imports["import torch, fabric_core"]["in_process_ms"],
            "ms",
            TARGET_MS,
        ),
        Headline(
            "import fabric_core, wall difference (noise-bound)",
            imports["import torch, fabric_core"]["wall_difference_ms"],
            "ms",
            None,
        ),
        Headline(
            "from fabric_core import Fabric (in-process)",
            imports["import torch; from fabric_core import Fabric"]["in_process_ms"],
            "ms",
            None,
        ),
        Headline(
            "from fabric_core import Fabric, wall difference (noise-bound)",
            imports["import torch; from fabric_core import Fabric"]["wall_difference_ms"],
            "ms",
            None,
        ),
        Headline("fabric --help, wall", result["cli"]["wall_ms"]["fabric --help"], "ms", None),
    ]


def _iqr(summary: dict[str, float], digits: int = 1) -> str:
    return f"{summary['median']:.{digits}f} (IQR {summary['q25']:.{digits}f}..{summary['q75']:.{digits}f})"


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    imports, cli = result["imports"], result["cli"]
    lines = [
        f"Import time: {result['config']['rounds']} fresh processes per variant, interleaved; "
        f"target for 'import fabric_core' <= {result['target_ms']:.0f} ms",
        f"  {'':<46} {'wall ms':>8}  {'wall - torch ms':<22} {'in-process ms':<22} "
        f"{'CPU ms':>6}  torch._dynamo",
    ]
    for name, entry in imports.items():
        difference = _iqr(entry["wall_difference_ms"], 0) if "wall_difference_ms" in entry else "-"
        in_process = _iqr(entry["in_process_ms"]) if "in_process_ms" in entry else "-"
        cpu = f"{entry['in_process_cpu_ms']['median']:.1f}" if "in_process_cpu_ms" in entry else "-"
        dynamo = "imported" if entry["torch_dynamo_imported"] else "not imported"
        wall = entry["wall_ms"]["median"]
        lines.append(f"  {name:<46} {wall:8.0f}  {difference:<22} {in_process:<22} {cpu:>6}  {dynamo}")
    help_ms, bare_ms = cli["wall_ms"]["fabric --help"]["median"], cli["wall_ms"]["python -c pass"]["median"]
    lines.append(
        f"  fabric --help: {help_ms:.0f} ms wall, {_iqr(cli['difference_ms'])} ms over 'python -c pass' "
        f"({bare_ms:.0f} ms); imports torch: {cli['torch_imported']}"
    )
    lines.append(f"  bare 'import fabric_core' imports torch: {cli['bare_import_fabric_core_imports_torch']}")
    for what, entry in result["importtime"].items():
        top = ", ".join(f"{module} {ms:.1f}" for module, ms in entry["top_self_ms"].items())
        lines.append(
            f"  -X importtime, {what}: {entry['modules']} more modules, {entry['total_self_ms']:.1f} ms "
            f"self time (inflated by -X importtime); largest: {top}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/import_time.py [--quick]``."""
    args = make_parser(NAME, __doc__).parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
