"""Test, lint and benchmark sessions. `nox` runs the default set (what CI runs).

Every session runs in its own uv-managed virtual environment. Where the machine keeps
local torch wheels (PIP_FIND_LINKS), uv is pointed at them too (uv reads only
UV_FIND_LINKS), so the CPU build of torch is used instead of a multi-GB CUDA download;
elsewhere torch comes from the package index.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = os.environ.get("FABRIC_PYTHON", "3.11")
TORCH = os.environ.get("FABRIC_TORCH", "torch==2.13.0")
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.3")

if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "core", "ddp", "integration", "docs"]


def _packages(*names: str) -> list[str]:
    args: list[str] = []
    for name in names:
        args += ["-e", str(ROOT / "packages" / name)]
    return args


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """fabric-core's unit tests, in an environment with only torch, pluggy and pytest."""
    session.install(TORCH, *TEST_TOOLS, *_packages("fabric-core"))
    session.run("pytest", "packages/fabric-core/tests", *session.posargs)


@nox.session(python=PYTHON)
def ddp(session: nox.Session) -> None:
    """fabric-ddp's tests: real 2-process gloo groups launched every supported way."""
    session.install(TORCH, *TEST_TOOLS, *_packages("fabric-core", "fabric-ddp"))
    session.run("pytest", "packages/fabric-ddp/tests", *session.posargs)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-distribution tests: wheels installed into fresh virtual environments."""
    session.install(TORCH, *TEST_TOOLS, "uv", *_packages("fabric-core"))
    session.run("pytest", "tests-integration", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: style, import order, docstrings."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every distribution's sources."""
    session.install(TORCH, "mypy>=1.13", *_packages("fabric-core", "fabric-ddp"))
    session.run("mypy", "packages/fabric-core/src", "packages/fabric-ddp/src")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the user guide and API reference into build/site (warnings are errors)."""
    session.install(
        TORCH, "mkdocs>=1.6", "mkdocstrings[python]>=0.26", *_packages("fabric-core", "fabric-ddp")
    )
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def example(session: nox.Session) -> None:
    """Train the example classifier on scikit-learn's bundled digits data, on one CPU."""
    session.install(TORCH, "scikit-learn", *_packages("fabric-core"))
    session.run("python", "examples/train_digits.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Overhead, import-time and discovery-time measurements (not part of the default run)."""
    session.install(TORCH, "uv", *_packages("fabric-core"))
    session.run("python", "benchmarks/run_all.py", *session.posargs)
