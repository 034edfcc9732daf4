"""Fixtures: wheels of every distribution, and fresh environments built from them.

Wheels are built on first use, so a session builds only what its tests install, and a
package that does not build breaks only the tests that install it. Environments are made
once per combination and shared by every test that asks for the same one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from venvs import ROOT, FreshEnvironment, build_wheel

PLUGINS = Path(__file__).resolve().parent / "plugins"

# The test plugins are installed into fresh environments, never imported from here: their own
# tests (fabric-localsgd/tests) run inside an environment where the plugin is installed.
collect_ignore = ["plugins"]


class Wheelhouse(Mapping[str, Path]):
    """Wheels by project directory name (``"fabric-ddp"``, ``"fabric-localsgd"``), built on first use."""

    def __init__(self, out_dir: Path) -> None:
        self._out_dir = out_dir
        self._projects = {
            project.name: project
            for project in [*sorted((ROOT / "packages").iterdir()), *sorted(PLUGINS.iterdir())]
            if (project / "pyproject.toml").exists()
        }
        self._wheels: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._wheels:
            self._wheels[name] = build_wheel(self._projects[name], self._out_dir)
        return self._wheels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._projects)

    def __len__(self) -> int:
        return len(self._projects)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """Wheels of every distribution under packages/ and every test plugin, by project name."""
    return Wheelhouse(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="session")
def fresh_environment(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Wheelhouse
) -> Callable[..., FreshEnvironment]:
    """Make (once per combination) a fresh environment holding torch and the named distributions.

    Call it as ``fresh_environment("fabric-core", "fabric-localsgd[test]", no_deps=("fabric-xla",))``:
    a name may carry extras, and the ``no_deps`` projects are installed without dependencies.
    """
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], FreshEnvironment] = {}

    def make(*names: str, no_deps: tuple[str, ...] = ()) -> FreshEnvironment:
        key = (tuple(sorted(names)), tuple(sorted(no_deps)))
        if key not in cache:
            label = "-".join(re.sub(r"\W+", "", name) for name in (*key[0], *key[1]))
            path = tmp_path_factory.mktemp(f"venv-{label}"[:60])
            requirements = [_requirement(name, wheelhouse) for name in key[0]]
            cache[key] = FreshEnvironment(path, requirements, [wheelhouse[name] for name in key[1]])
        return cache[key]

    return make


def _requirement(name: str, wheelhouse: Wheelhouse) -> Path | str:
    project, _, extras = name.partition("[")
    wheel = wheelhouse[project]
    return f"{project}[{extras} @ {wheel.as_uri()}" if extras else wheel
