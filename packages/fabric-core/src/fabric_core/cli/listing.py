"""``fabric strategies``, ``fabric plugins`` and ``fabric env``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections import Counter
from typing import Any

from fabric_core._registries import STRATEGY_REGISTRY
from fabric_core.hookspecs import PLUGIN_API_VERSION
from fabric_core.plugins import discovery_seconds, plugin_infos
from fabric_core.registry import Registry


def strategy_rows(registry: Registry = STRATEGY_REGISTRY) -> list[dict[str, Any]]:
    """One row per registered strategy, plus one per name that is missing.

    Missing names are those a plugin that did not load had registered before it failed, and
    first-party names whose plugin is not installed or did not load.
    """
    rows = []
    for entry in registry.entries():
        missing = entry.missing_requirements()
        rows.append(
            {
                "name": entry.name,
                "description": entry.description,
                "provider": entry.provider,
                "status": "available" if not missing else f"missing {', '.join(missing)}",
                "buildable": not missing,
            }
        )
    not_loaded = [info for info in plugin_infos() if info.status != "loaded"]
    listed = {row["name"] for row in rows}
    for info in not_loaded:
        for name in info.rolled_back.get(registry.plural, []):
            if name not in listed:
                listed.add(name)
                rows.append(_missing_row(name, info.distribution, f"plugin {info.status}: {info.error}"))
    problems = {_normalize(info.distribution): info for info in not_loaded}
    for name, distribution in registry.hints.items():
        if name in listed:
            continue
        problem = problems.get(_normalize(distribution))
        status = (
            f"plugin {problem.status}: {problem.error}"
            if problem
            else f"not installed (pip install {distribution})"
        )
        rows.append(_missing_row(name, distribution, status))
    return rows


def _missing_row(name: str, provider: str, status: str) -> dict[str, Any]:
    return {"name": name, "description": "", "provider": provider, "status": status, "buildable": False}


def run_strategies(args: argparse.Namespace) -> int:
    """Print the strategy table."""
    rows = strategy_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    installed = [row for row in rows if row["buildable"] or not row["status"].startswith("not installed")]
    _print_table(installed, ("name", "provider", "status", "description"))
    absent = sorted({row["provider"] for row in rows if row["status"].startswith("not installed")})
    if absent:
        print(f"\nMore strategies come with: {', '.join(absent)}")
    not_loaded = [info for info in plugin_infos() if info.status != "loaded"]
    if not_loaded:
        print("\nPlugins that did not load (the strategies they provide are missing; see `fabric plugins`):")
        for info in not_loaded:
            print(f"  {info.name} ({info.distribution} {info.version}): {info.status}: {info.error}")
    return 0


def run_plugins(args: argparse.Namespace) -> int:
    """Print every plugin record."""
    infos = plugin_infos()
    if args.json:
        print(
            json.dumps(
                {"discovery_ms": discovery_seconds() * 1e3, "plugins": [i.as_dict() for i in infos]}, indent=2
            )
        )
        return 0
    for info in infos:
        print(f"{info.name}  ({info.distribution} {info.version})  [{info.status}]")
        print(f"  module: {info.module}")
        if info.api_versions:
            print(f"  plugin API: {', '.join(map(str, info.api_versions))}")
        if info.error:
            print(f"  error:  {info.error}")
        if info.hooks:
            print(f"  hooks:  {', '.join(info.hooks)}")
        for kind, names in info.registered.items():
            if names:
                print(f"  {kind}: {', '.join(names)}")
        for kind, names in info.rolled_back.items():
            print(f"  {kind} removed again: {', '.join(names)}")
    counts = Counter(info.status for info in infos)
    summary = ", ".join(
        f"{counts[status]} {status}" for status in ("loaded", "failed", "incompatible", "disabled")
    )
    print(f"\n{len(infos)} plugins ({summary}); this fabric-core provides plugin API {PLUGIN_API_VERSION}.")
    print(f"Discovery took {discovery_seconds() * 1e3:.1f} ms.")
    return 0


def run_env(args: argparse.Namespace) -> int:
    """Print versions, devices, plugins and the detected cluster environment."""
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(f"  - {item}")
        else:
            print(f"{key}: {value}")
    return 0


def environment_report() -> dict[str, Any]:
    """What a bug report needs, as a dict."""
    import torch

    from fabric_core.__about__ import __version__
    from fabric_core.environments.detect import detect_environment

    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "fabric-core": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda available": cuda,
        "cuda devices": torch.cuda.device_count() if cuda else 0,
        "cuda version": torch.version.cuda,
        "mps available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        **{name: _version_of(name) for name in ("numpy", "pluggy", "deepspeed", "torch_xla")},
        "cluster environment": type(detect_environment()).__name__,
        "plugins": [f"{i.name} ({i.distribution} {i.version}): {i.status}" for i in plugin_infos()],
        "FABRIC_* variables": [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("FABRIC_")],
    }
    return report


def _version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns[:-1]}
    header = "  ".join(c.upper().ljust(widths[c]) for c in columns[:-1]) + "  " + columns[-1].upper()
    print(header)
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns[:-1]) + "  " + str(row[columns[-1]]))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
