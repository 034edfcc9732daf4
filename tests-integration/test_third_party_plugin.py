"""The third-party example plugin (plugins/fabric-localsgd), installed from its wheel into a fresh
environment: it trains with 2 processes through `fabric run` and its own tests pass there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PLUGINS
from venvs import FreshEnvironment

PLUGIN = PLUGINS / "fabric-localsgd"


@pytest.fixture(scope="module")
def env(fresh_environment: Any) -> FreshEnvironment:
    return fresh_environment("fabric-core", "fabric-localsgd[test]")


def test_its_strategy_trains_with_two_processes_through_fabric_run(
    env: FreshEnvironment, tmp_path: Path
) -> None:
    output = tmp_path / "result.json"

    env.run(
        "fabric",
        "run",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "localsgd",
        str(PLUGIN / "examples" / "train.py"),
        str(output),
    )

    result = json.loads(output.read_text())
    assert (result["strategy"], result["world_size"]) == ("LocalSGDStrategy", 2)
    assert result["last_loss"] < 0.5 * result["first_loss"], result
    assert result["replica_spread"] == 0.0, "the last step averaged the replicas, so they must be identical"


def test_its_own_tests_pass_in_the_environment_it_is_installed_in(env: FreshEnvironment) -> None:
    # Run from the plugin's directory (its pyproject configures pytest); the package is imported
    # from the installed wheel, as src/ is not on the path.
    result = env.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=PLUGIN, check=False)

    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert summary.startswith("20 passed"), summary
    located = env.python("import fabric_localsgd; print(fabric_localsgd.__file__)").stdout
    assert str(env.path) in located, "the tests must import the installed wheel, not the source tree"
