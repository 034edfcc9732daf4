"""Plugin discovery time with every first-party plugin installed, next to 50 dummy plugins.

Issue 7 sets two targets for the first ``fabric_core.plugins.ensure_plugins_loaded()``
call: at most 10 ms with all first-party plugins installed, at most 30 ms with 50 installed
plugin distributions. The figure is ``fabric_core.plugins.discovery_seconds()`` read in a
fresh interpreter, median over rounds, environments measured interleaved:

- ``all first-party``: a fresh ``uv venv`` with torch, fabric-core and every
  ``packages/fabric-*`` plugin distribution found (editable). fabric-deepspeed and
  fabric-xla go in with ``--no-deps``: discovery imports only their plugin modules, never
  deepspeed or torch_xla, and torch_xla would replace the benchmark's torch.
- ``all first-party, no bytecode cache``: the same environment, but every process compiles
  each module it imports (``PYTHONDONTWRITEBYTECODE`` and no ``.pyc`` files, as on the
  development machine); the row above has the bytecode an installed wheel has. The target
  is stated for both.
- ``50 plugins``: the 50-dummy-plugin environment of ``discovery_time.py`` (reused, cached).

Environments are kept under ``benchmarks/results/venvs/`` and rebuilt when the set of
plugin distributions, their ``pyproject.toml`` files or torch change (``--rebuild`` forces it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CORE_PATH,
    REPO_ROOT,
    Headline,
    Result,
    apply_common_options,
    child_env,
    make_parser,
    run_python,
    spread,
    standalone,
    summarize,
)
from discovery_time import (
    CHILD,
    MANY,
    VENV_ROOT,
    ensure_venv,
    find_uv,
    torch_requirement,
    uv_env,
    venv_python,
)

NAME = "discovery_all_plugins"
ROUNDS = 15
QUICK_ROUNDS = 5
ALL = "all first-party"
NO_BYTECODE = "all first-party, no bytecode cache"
TARGETS_MS = {ALL: 10.0, NO_BYTECODE: 10.0, f"{MANY} plugins": 30.0}
NO_DEPS = ("fabric-deepspeed", "fabric-xla")


def first_party_projects() -> list[Path]:
    """Every plugin distribution under packages/ (fabric-core excluded)."""
    return sorted(
        path
        for path in (REPO_ROOT / "packages").iterdir()
        if path.name != "fabric-core" and (path / "pyproject.toml").exists()
    )


def ensure_first_party_venv(uv: str) -> Path:
    """A cached environment with torch, fabric-core and every first-party plugin (editable)."""
    projects = first_party_projects()
    inputs = {
        "python": sys.version,
        "torch": torch_requirement(),
        "projects": {p.name: (p / "pyproject.toml").read_text() for p in [CORE_PATH, *projects]},
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    venv = VENV_ROOT / f"first-party-{key}"
    marker = venv / "fabric-bench.json"
    if marker.exists():
        return venv
    for stale in VENV_ROOT.glob("first-party-*"):
        shutil.rmtree(stale)
    env = uv_env()
    python = str(venv_python(venv))
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    with_deps = [p for p in projects if p.name not in NO_DEPS]
    command = [uv, "pip", "install", "--quiet", "--python", python, torch_requirement(), "-e", str(CORE_PATH)]
    subprocess.run([*command, *(arg for p in with_deps for arg in ("-e", str(p)))], check=True, env=env)
    without = [p for p in projects if p.name in NO_DEPS]
    if without:
        no_deps = [uv, "pip", "install", "--quiet", "--python", python, "--no-deps"]
        subprocess.run([*no_deps, *(arg for p in without for arg in ("-e", str(p)))], check=True, env=env)
    marker.write_text(json.dumps({**inputs, "installed": [p.name for p in projects]}, indent=1))
    return venv


def measure(rounds: int, rebuild: bool) -> Result:
    """Both environments, interleaved, ``rounds`` fresh processes each."""
    uv = find_uv()
    if uv is None:
        raise RuntimeError("uv is needed to build the plugin environments: pip install uv")
    if rebuild:
        for stale in [*VENV_ROOT.glob("first-party-*"), *VENV_ROOT.glob(f"plugins-{MANY}-*")]:
            shutil.rmtree(stale)
    first_party = venv_python(ensure_first_party_venv(uv))
    cases = {
        ALL: (first_party, True),
        NO_BYTECODE: (first_party, False),
        f"{MANY} plugins": (venv_python(ensure_venv(MANY, uv)), True),
    }
    envs = {}
    for label, (_, bytecode) in cases.items():
        envs[label] = child_env(bytecode=bytecode)
        for name in ("FABRIC_DISABLE_PLUGINS", "FABRIC_LOAD_PLUGINS", "PYTHONPATH"):
            envs[label].pop(name, None)
    labels = list(cases)

    def once(label: str) -> Result:
        record: Result = json.loads(run_python(CHILD, python=cases[label][0], env=envs[label])[1])
        return record

    last = {label: once(label) for label in labels}
    samples: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    for index in range(rounds):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            record = once(label)
            samples[label].append(record["seconds"] * 1e3)
            cpu[label].append(record["cpu_seconds"] * 1e3)
            last[label] = record
    environments = {}
    for label in labels:
        summary = summarize(samples[label])
        environments[label] = {
            "discovery_ms": summary,
            "discovery_cpu_ms": summarize(cpu[label]),
            "plugins": last[label]["plugins"][1:],
            "not_loaded": last[label]["not_loaded"],
            "torch_imported": last[label]["torch_imported"],
            "target_ms": TARGETS_MS[label],
            "within_target": summary["median"] <= TARGETS_MS[label],
        }
    return {"config": {"rounds": rounds, "venvs": str(VENV_ROOT)}, "environments": environments}


def run(quick: bool = False, rebuild: bool = False) -> Result:
    """Both environments; ``quick`` uses fewer rounds."""
    return measure(QUICK_ROUNDS if quick else ROUNDS, rebuild)


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    return [
        Headline(f"plugin discovery, {label}", entry["discovery_ms"], "ms", entry["target_ms"])
        for label, entry in result["environments"].items()
    ]


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    lines = [
        f"Plugin discovery: first ensure_plugins_loaded(), {result['config']['rounds']} fresh processes each"
    ]
    for label, entry in result["environments"].items():
        found = entry["plugins"]
        names = f" ({', '.join(found)})" if len(found) <= 6 else ""
        status = f"{len(found)} plugin(s){names}"
        if entry["not_loaded"]:
            status += f", NOT LOADED: {entry['not_loaded']}"
        if entry["torch_imported"]:
            status += ", TORCH IMPORTED"
        target = f"[target <= {entry['target_ms']:.0f} ms: {'met' if entry['within_target'] else 'MISSED'}]"
        lines.append(f"  {label:<16} {spread(entry['discovery_ms'], 'ms', 2)}  {target}; {status}")
        lines.append(f"  {'':<16} CPU time {spread(entry['discovery_cpu_ms'], 'ms', 2)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/discovery_all_plugins.py [--quick] [--rebuild]``."""
    parser = make_parser(NAME, __doc__)
    parser.add_argument("--rebuild", action="store_true", help="recreate the cached plugin environments")
    args = parser.parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, lambda quick: run(quick, rebuild=args.rebuild), format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
