"""Shared fixtures of the fabric-core unit tests.

Every test gets the process environment and torch's default dtype restored afterwards
(its time limit is in pyproject.toml, for pytest-timeout). Tests that install fake plugin
distributions use ``make_plugin``, which also rediscovers the plugins before and after the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from core_helpers import FAKE_MODULE_PREFIX, write_distribution

from fabric_core.plugins import reset_plugins
from fabric_core.strategies import STRATEGY_REGISTRY


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Undo changes to ``os.environ`` (seeding exports variables) and torch's default dtype."""
    environ = dict(os.environ)
    dtype = torch.get_default_dtype()
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_default_dtype(dtype)


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Forget every registration before and after the test, so discovery runs anew."""
    reset_plugins()
    yield
    reset_plugins()
    for name in [name for name in sys.modules if name.startswith(FAKE_MODULE_PREFIX)]:
        del sys.modules[name]


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugins: None) -> Callable[..., Path]:
    """Install fake plugin distributions from ``tmp_path`` (on ``sys.path`` for this test only).

    Call it as ``make_plugin(distribution, {entry_point: module}, {module: source})``; it
    returns the directory it wrote. Discovery runs again on the next registry use.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(distribution: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> Path:
        write_distribution(tmp_path, distribution, entry_points, modules)
        reset_plugins()
        return tmp_path

    return make


@pytest.fixture
def without_distribution(fresh_plugins: None) -> Callable[[str], None]:
    """Make the registries look as if a first-party distribution were not installed.

    The suite must not depend on which plugin distributions the environment happens to
    hold, so ``without_distribution("fabric-ddp")`` removes every strategy name the
    distribution provides (names are restored after the test).
    """

    def forget(distribution: str) -> None:
        for name in list(STRATEGY_REGISTRY):
            if STRATEGY_REGISTRY.provider_of(name) == distribution:
                STRATEGY_REGISTRY.remove(name)

    return forget
