"""Fixtures: wheels of every distribution, and fresh environments built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from venvs import ROOT, FreshEnvironment, build_wheel

PLUGINS = Path(__file__).resolve().parent / "plugins"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wheels of every distribution under packages/ and every test plugin, by project name."""
    out_dir = tmp_path_factory.mktemp("wheels")
    projects = sorted((ROOT / "packages").iterdir()) + sorted(PLUGINS.iterdir())
    return {
        project.name: build_wheel(project, out_dir)
        for project in projects
        if (project / "pyproject.toml").exists()
    }


@pytest.fixture(scope="session")
def fresh_environment(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: dict[str, Path]
) -> Callable[..., FreshEnvironment]:
    """Make (once per combination) a fresh environment holding torch and the named distributions."""
    cache: dict[tuple[str, ...], FreshEnvironment] = {}

    def make(*names: str) -> FreshEnvironment:
        key = tuple(sorted(names))
        if key not in cache:
            path = tmp_path_factory.mktemp("venv-" + "-".join(key))
            cache[key] = FreshEnvironment(path, [wheelhouse[name] for name in key])
        return cache[key]

    return make
