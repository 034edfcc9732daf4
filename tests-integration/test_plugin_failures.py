"""Bad plugins next to good ones, in one fresh environment: each bad one is reported by
`fabric plugins` with its cause, and everything else keeps working."""

from __future__ import annotations

import json
from typing import Any

import pytest
from probes import CROWDED, expected_strategies
from venvs import FreshEnvironment

GOOD = {"core", "ddp", "throwaway"}


@pytest.fixture(scope="module")
def env(fresh_environment: Any) -> FreshEnvironment:
    return fresh_environment(*CROWDED)


@pytest.fixture(scope="module")
def plugins(env: FreshEnvironment) -> dict[str, dict[str, Any]]:
    report = json.loads(env.run("fabric", "plugins", "--json").stdout)
    return {plugin["name"]: plugin for plugin in report["plugins"]}


def test_a_plugin_that_raises_on_import_is_failed_with_the_error(plugins: dict[str, dict[str, Any]]) -> None:
    broken = plugins["broken"]

    assert (broken["status"], broken["distribution"], broken["version"]) == (
        "failed",
        "fabric-broken-plugin",
        "0.0.1",
    )
    assert (
        broken["error"] == "import failed: ImportError: broken_plugin needs a library that is not installed"
    )


def test_a_plugin_for_another_api_version_is_incompatible_and_never_called(
    plugins: dict[str, dict[str, Any]],
) -> None:
    incompatible = plugins["incompatible"]

    assert incompatible["status"] == "incompatible"
    assert incompatible["api_versions"] == [99]
    assert "supports fabric plugin API version(s) 99, but fabric-core" in incompatible["error"]
    assert incompatible["error"].endswith("provides version 1")
    assert incompatible["hooks"] == [] and incompatible["registered"] == {}


def test_a_plugin_registering_a_taken_name_is_failed_and_rolled_back(
    plugins: dict[str, dict[str, Any]],
) -> None:
    duplicate = plugins["duplicate"]

    assert duplicate["status"] == "failed"
    assert duplicate["error"].startswith(
        "DuplicateNameError: The strategy 'single_device' is already registered by fabric-core"
    )
    assert duplicate["rolled_back"] == {"strategies": ["duplicate_own"]}
    assert duplicate["registered"] == {}


def test_the_good_plugins_load_with_their_versions(plugins: dict[str, dict[str, Any]]) -> None:
    assert {name for name, plugin in plugins.items() if plugin["status"] == "loaded"} == GOOD
    assert plugins["ddp"]["version"] == "0.1.0" and plugins["throwaway"]["version"] == "0.0.1"
    assert plugins["ddp"]["api_versions"] == [1]


def test_plugins_text_names_each_plugin_its_version_and_the_cause(env: FreshEnvironment) -> None:
    out = env.run("fabric", "plugins").stdout

    assert "broken  (fabric-broken-plugin 0.0.1)  [failed]" in out
    assert "incompatible  (fabric-incompatible-plugin 0.0.1)  [incompatible]" in out
    assert "duplicate  (fabric-duplicate-plugin 0.0.1)  [failed]" in out
    assert "  strategies removed again: duplicate_own" in out
    assert "6 plugins (3 loaded, 2 failed, 1 incompatible, 0 disabled)" in out


def test_strategies_lists_the_working_names_and_marks_what_is_missing(env: FreshEnvironment) -> None:
    rows = {row["name"]: row for row in json.loads(env.run("fabric", "strategies", "--json").stdout)}
    text = env.run("fabric", "strategies").stdout

    available = {name for name, row in rows.items() if row["buildable"]}
    assert available == expected_strategies({"fabric-ddp"}) | {"throwaway"}
    assert rows["duplicate_own"]["status"].startswith("plugin failed: DuplicateNameError")
    assert rows["single_device"]["provider"] == "fabric-core"
    assert "from_the_future" not in rows, "an incompatible plugin's hook is never called"
    footer = text.split("Plugins that did not load")[1]
    assert "broken (fabric-broken-plugin 0.0.1): failed: import failed: ImportError" in footer
    assert "incompatible (fabric-incompatible-plugin 0.0.1): incompatible: the plugin supports" in footer


def test_the_allow_list_loads_only_the_named_plugins(env: FreshEnvironment) -> None:
    report = json.loads(
        env.run("fabric", "plugins", "--json", env={"FABRIC_LOAD_PLUGINS": "fabric-ddp"}).stdout
    )

    statuses = {plugin["name"]: (plugin["status"], plugin["error"]) for plugin in report["plugins"]}
    assert statuses.pop("core") == ("loaded", "")
    assert statuses.pop("ddp") == ("loaded", "")
    assert set(statuses.values()) == {("disabled", "not listed in FABRIC_LOAD_PLUGINS")}
