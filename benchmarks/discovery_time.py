"""Time of plugin discovery: the first ``fabric_core.plugins.ensure_plugins_loaded()`` call.

Discovery runs once per process, the first time a registry is asked for a name: it scans
the ``fabric`` entry-point group, imports each plugin module and calls its hooks. The
figure is ``fabric_core.plugins.discovery_seconds()`` read in a fresh interpreter, median
over rounds, in three environments (measured interleaved, one process each per round).
The process CPU time of the same call is recorded too (``discovery_cpu_ms``): unlike the
wall time, it is hardly inflated when other processes compete for the cores.

- ``current``: the interpreter running the benchmark, as it is.
- ``1 plugin``: a fresh ``uv venv`` with torch, fabric-core (editable) and one throwaway
  plugin distribution (hatchling, ``[project.entry-points.fabric] thing = "thing_plugin"``,
  registering a strategy by dotted path).
- ``50 plugins``: the same with 50 such distributions.

The plugin sources are generated in a temporary directory. The virtual environments are
kept under ``benchmarks/results/venvs/`` and reused while their inputs (Python, torch,
fabric-core's ``pyproject.toml``, the plugin template) are unchanged; fabric-core is
installed editable, so library edits need no rebuild. torch is pinned to the exact version
running the benchmark (``2.13.0+cpu`` here, found through ``UV_FIND_LINKS``, which is set
from ``PIP_FIND_LINKS`` when missing), so uv never fetches a CUDA build; the environment is
checked for ``nvidia-*`` distributions after installing.

``--rebuild`` deletes the cached environments first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import distributions
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CORE_PATH,
    RESULTS_DIR,
    Headline,
    Result,
    apply_common_options,
    child_env,
    make_parser,
    package_version,
    run_python,
    spread,
    standalone,
    summarize,
)

NAME = "discovery_time"
ROUNDS = 15
QUICK_ROUNDS = 5
MANY = 50
TARGETS_MS = {"current": 10.0, "1 plugin": 10.0, f"{MANY} plugins": 30.0}
VENV_ROOT = RESULTS_DIR / "venvs"
TEMPLATE_VERSION = 1

CHILD = """\
import json, sys, time
from fabric_core import plugins
cpu = time.process_time()
plugins.ensure_plugins_loaded()
cpu = time.process_time() - cpu
seconds = plugins.discovery_seconds()
infos = plugins.plugin_infos()
print(json.dumps({
    "seconds": seconds,
    "cpu_seconds": cpu,
    "plugins": [info.name for info in infos],
    "not_loaded": {info.name: info.error for info in infos if info.status != "loaded"},
    "torch_imported": "torch" in sys.modules,
}))
"""

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "{distribution}"
version = "0.0.1"
description = "A dummy fabric plugin for the discovery benchmark."
requires-python = ">=3.10"
dependencies = ["fabric-core"]

[project.entry-points.fabric]
{entry_point} = "{module}"

[tool.hatch.build.targets.wheel]
packages = ["{module}"]
"""

_PLUGIN_MODULE = '''\
"""Dummy fabric plugin: registers one strategy by dotted path, imports nothing heavy."""

from fabric_core import hookimpl

FABRIC_PLUGIN_API = (1,)


@hookimpl
def fabric_register_strategies(registry):
    registry.register(
        "{entry_point}", "{module}.strategy:ThingStrategy", description="A dummy single-device strategy"
    )
'''

_STRATEGY_MODULE = '''\
"""The strategy, imported only when its name is built."""

from fabric_core.strategies import SingleDeviceStrategy


class ThingStrategy(SingleDeviceStrategy):
    """A single-device strategy under another name."""
'''


def write_plugin(root: Path, distribution: str, entry_point: str, module: str) -> Path:
    """Write one plugin distribution's sources under ``root`` and return its directory."""
    project = root / distribution
    package = project / module
    package.mkdir(parents=True)
    names = {"distribution": distribution, "entry_point": entry_point, "module": module}
    (project / "pyproject.toml").write_text(_PYPROJECT.format(**names))
    (package / "__init__.py").write_text(_PLUGIN_MODULE.format(**names))
    (package / "strategy.py").write_text(_STRATEGY_MODULE)
    return project


def plugin_specs(count: int) -> list[tuple[str, str, str]]:
    """(distribution, entry-point name, module) of ``count`` dummy plugins."""
    if count == 1:
        return [("fabric-bench-thing", "thing", "thing_plugin")]
    return [(f"fabric-bench-thing-{i:02d}", f"thing_{i:02d}", f"thing_plugin_{i:02d}") for i in range(count)]


def find_uv() -> str | None:
    """The uv executable: next to this interpreter (the nox session installs it), else on PATH."""
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def uv_env() -> dict[str, str]:
    """The environment for uv: local wheels (PIP_FIND_LINKS) also visible to uv."""
    env = child_env()
    if env.get("PIP_FIND_LINKS") and not env.get("UV_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    env.pop("VIRTUAL_ENV", None)
    return env


def torch_requirement() -> str:
    """``torch==<the version running here>``, local label included (``2.13.0+cpu``)."""
    installed = package_version("torch")
    if installed is None:
        raise RuntimeError("torch is not installed in the benchmark's interpreter")
    return f"torch=={installed}"


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    return venv / "bin" / "python"


def ensure_venv(count: int, uv: str) -> Path:
    """A cached virtual environment with torch, fabric-core and ``count`` dummy plugins."""
    torch = torch_requirement()
    inputs = {
        "python": sys.version,
        "base": sys.base_prefix,
        "torch": torch,
        "core": str(CORE_PATH),
        "core_pyproject": (CORE_PATH / "pyproject.toml").read_text(),
        "template": [TEMPLATE_VERSION, _PYPROJECT, _PLUGIN_MODULE, _STRATEGY_MODULE],
        "plugins": count,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    venv = VENV_ROOT / f"plugins-{count}-{key}"
    marker = venv / "fabric-bench.json"
    if marker.exists():
        return venv
    for stale in VENV_ROOT.glob(f"plugins-{count}-*"):
        shutil.rmtree(stale)
    env = uv_env()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    with tempfile.TemporaryDirectory(prefix="fabric-bench-plugins-") as temp:
        projects = [write_plugin(Path(temp), *spec) for spec in plugin_specs(count)]
        command = [uv, "pip", "install", "--quiet", "--python", str(venv_python(venv)), torch]
        command += ["-e", str(CORE_PATH), *map(str, projects)]
        subprocess.run(command, check=True, env=env)
    installed = {dist.metadata["Name"] for dist in distributions(path=_site_packages(venv))}
    cuda = sorted(name for name in installed if name.lower().startswith("nvidia"))
    if cuda:
        shutil.rmtree(venv)
        raise RuntimeError(f"uv installed CUDA packages ({', '.join(cuda)}); expected the CPU build of torch")
    marker.write_text(json.dumps({**inputs, "installed": sorted(installed)}, indent=1))
    return venv


def _site_packages(venv: Path) -> list[str]:
    return [str(path) for path in (venv / "lib").glob("python*/site-packages")]


def measure(rounds: int, rebuild: bool = False) -> Result:
    """Discovery time in the current environment and, where uv is available, the plugin venvs."""
    pythons: dict[str, Path] = {"current": Path(sys.executable)}
    notes: list[str] = []
    if rebuild:
        for venv in VENV_ROOT.glob("plugins-*"):
            shutil.rmtree(venv)
    uv = find_uv()
    if uv is None:
        notes.append("uv not found: the plugin environments were skipped (pip install uv)")
    else:
        for count in (1, MANY):
            label = "1 plugin" if count == 1 else f"{count} plugins"
            pythons[label] = venv_python(ensure_venv(count, uv))
    envs = {label: child_env() for label in pythons}
    for label in pythons:
        for name in ("FABRIC_DISABLE_PLUGINS", "FABRIC_LOAD_PLUGINS"):
            envs[label].pop(name, None)
        if label != "current":
            envs[label].pop("PYTHONPATH", None)
    labels = list(pythons)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    cpu_samples: dict[str, list[float]] = {label: [] for label in labels}
    last: dict[str, Result] = {}
    for label in labels:  # warm-up, and a check that every plugin loads
        last[label] = json.loads(run_python(CHILD, python=pythons[label], env=envs[label])[1])
    for index in range(rounds):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            record = json.loads(run_python(CHILD, python=pythons[label], env=envs[label])[1])
            samples[label].append(record["seconds"] * 1e3)
            cpu_samples[label].append(record["cpu_seconds"] * 1e3)
            last[label] = record
    results: Result = {}
    for label in labels:
        summary = summarize(samples[label])
        results[label] = {
            "discovery_ms": summary,
            "discovery_cpu_ms": summarize(cpu_samples[label]),
            "plugins_found": len(last[label]["plugins"]) - 1,
            "plugin_names": last[label]["plugins"][1:],
            "not_loaded": last[label]["not_loaded"],
            "torch_imported": last[label]["torch_imported"],
            "target_ms": TARGETS_MS[label],
            "within_target": summary["median"] <= TARGETS_MS[label],
        }
    if f"{MANY} plugins" in results:
        extra = (
            results[f"{MANY} plugins"]["discovery_ms"]["median"]
            - results["1 plugin"]["discovery_ms"]["median"]
        )
        results["per_plugin_ms"] = extra / (MANY - 1)
    return {"environments": results, "notes": notes}


def run(quick: bool = False, rebuild: bool = False) -> Result:
    """All environments; ``quick`` uses fewer rounds."""
    rounds = QUICK_ROUNDS if quick else ROUNDS
    return {"config": {"rounds": rounds, "venvs": str(VENV_ROOT)}, **measure(rounds, rebuild)}


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    return [
        Headline(f"plugin discovery, {label}", entry["discovery_ms"], "ms", entry["target_ms"])
        for label, entry in result["environments"].items()
        if label != "per_plugin_ms"
    ]


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    lines = [
        f"Plugin discovery: first ensure_plugins_loaded(), {result['config']['rounds']} fresh processes each"
    ]
    environments = result["environments"]
    for label, entry in environments.items():
        if label == "per_plugin_ms":
            continue
        status = f"{entry['plugins_found']} plugin(s) found"
        if 0 < entry["plugins_found"] <= 3:
            status += f" ({', '.join(entry['plugin_names'])})"
        if entry["not_loaded"]:
            status += f", NOT LOADED: {entry['not_loaded']}"
        target = f"[target <= {entry['target_ms']:.0f} ms]"
        cpu = entry["discovery_cpu_ms"]["median"]
        lines.append(
            f"  {label:<11} {spread(entry['discovery_ms'], 'ms', 2)} CPU {cpu:.2f} ms  {target}; {status}"
        )
    if "per_plugin_ms" in environments:
        lines.append(f"  per additional plugin ({MANY} vs 1): {environments['per_plugin_ms']:.2f} ms")
    lines += [f"  note: {note}" for note in result["notes"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/discovery_time.py [--quick] [--rebuild]``."""
    parser = make_parser(NAME, __doc__)
    parser.add_argument("--rebuild", action="store_true", help="recreate the cached plugin environments")
    args = parser.parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, lambda quick: run(quick, rebuild=args.rebuild), format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
