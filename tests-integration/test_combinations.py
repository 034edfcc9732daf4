"""Fresh environments with fabric-core and one plugin each: exactly the expected names, helpful
errors for the rest, and listing strategies imports no heavy dependency (nor torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from probes import ASKED_FOR, expected_strategies, probe

LOCALSGD_NAMES = {"localsgd", "localsgd_spawn", "localsgd_fork"}


@dataclass(frozen=True)
class Combination:
    """Distributions installed together, and what they should register."""

    label: str
    install: tuple[str, ...]
    no_deps: tuple[str, ...] = ()
    first_party: frozenset[str] = frozenset()
    third_party_names: frozenset[str] = frozenset()


COMBINATIONS = [
    Combination("core", ("fabric-core",)),
    Combination("core+ddp", ("fabric-core", "fabric-ddp"), first_party=frozenset({"fabric-ddp"})),
    # deepspeed itself is replaced by a stand-in that must never be imported (see plugins/tripwire-*).
    Combination(
        "core+deepspeed",
        ("fabric-core",),
        no_deps=("fabric-deepspeed", "tripwire-deepspeed"),
        first_party=frozenset({"fabric-deepspeed"}),
    ),
    Combination(
        "core+third-party",
        ("fabric-core", "fabric-localsgd[test]"),
        third_party_names=frozenset(LOCALSGD_NAMES),
    ),
]

_PROBES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def report(request: pytest.FixtureRequest, fresh_environment: Any) -> dict[str, Any]:
    combination: Combination = request.param
    if combination.label not in _PROBES:
        env = fresh_environment(*combination.install, no_deps=combination.no_deps)
        _PROBES[combination.label] = probe(env, set(combination.first_party))
    return {"combination": combination, **_PROBES[combination.label]}


parametrize = pytest.mark.parametrize(
    "report", COMBINATIONS, indirect=True, ids=[combination.label for combination in COMBINATIONS]
)


@parametrize
def test_the_registered_strategies_are_exactly_the_expected_ones(report: dict[str, Any]) -> None:
    combination = report["combination"]
    expected = expected_strategies(set(combination.first_party)) | combination.third_party_names

    assert set(report["registered"]) == expected
    statuses = {name: plugin["status"] for name, plugin in report["plugins"].items()}
    assert set(statuses.values()) == {"loaded"}, statuses


@parametrize
def test_asking_for_a_missing_first_party_strategy_names_the_distribution(report: dict[str, Any]) -> None:
    errors = report["errors"]

    assert errors, "every combination lacks some first-party distribution"
    distributions = {name: distribution for distribution, name in ASKED_FOR.items()}
    for name, error in errors.items():
        assert error.startswith(f"UnknownNameError: The strategy '{name}' is provided by the distribution"), (
            error
        )
        assert f"Install it with: pip install {distributions[name]}" in error


@parametrize
def test_listing_every_strategy_imports_no_heavy_dependency_and_not_torch(report: dict[str, Any]) -> None:
    assert report["heavy_after_listing"] == []
    assert "torch" not in report["top_level_after_listing"]


HEAVY_PLUGINS = {"fabric-deepspeed": "tripwire-deepspeed", "fabric-xla": "tripwire-torch-xla"}


@pytest.fixture(scope="module")
def heavy_report(fresh_environment: Any) -> dict[str, Any]:
    """fabric-core with every heavy first-party plugin, each next to its stand-in."""
    no_deps = tuple(name for plugin, stand_in in HEAVY_PLUGINS.items() for name in (plugin, stand_in))
    return probe(fresh_environment("fabric-core", no_deps=no_deps), set(HEAVY_PLUGINS))


def test_import_and_listing_all_strategies_does_not_import_deepspeed(heavy_report: dict[str, Any]) -> None:
    assert "deepspeed_stage_3" in heavy_report["registered"]
    assert not [m for m in heavy_report["heavy_after_listing"] if m.startswith("deepspeed")]


def test_import_and_listing_all_strategies_does_not_import_torch_xla(heavy_report: dict[str, Any]) -> None:
    assert "xla" in heavy_report["registered"]
    assert not [m for m in heavy_report["heavy_after_listing"] if m.startswith("torch_xla")]
