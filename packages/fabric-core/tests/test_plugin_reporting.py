"""What `fabric plugins` and `fabric strategies` report about plugins that did not load, and API versions."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from core_helpers import unique_module_name

from fabric_core.cli import main
from fabric_core.plugins import PluginInfo, plugin_infos
from fabric_core.strategies import STRATEGY_REGISTRY

MakePlugin = Callable[..., Path]


def info_named(name: str) -> PluginInfo:
    (info,) = [info for info in plugin_infos() if info.name == name]
    return info


@pytest.mark.parametrize(("declared", "recorded"), [("1", [1]), ("(2, 1)", [1, 2]), ("[1]", [1])])
def test_the_declared_plugin_api_versions_are_recorded(
    make_plugin: MakePlugin, declared: str, recorded: list[int]
) -> None:
    module = unique_module_name("versioned_plugin")
    make_plugin("fakeplugin", {"versioned": module}, {module: f"FABRIC_PLUGIN_API = {declared}\n"})

    info = info_named("versioned")

    assert (info.status, info.api_versions) == ("loaded", recorded)


def test_a_malformed_plugin_api_declaration_fails_the_plugin_alone(make_plugin: MakePlugin) -> None:
    module = unique_module_name("malformed_plugin")
    make_plugin("fakeplugin", {"malformed": module}, {module: "FABRIC_PLUGIN_API = 'one'\n"})

    info = info_named("malformed")

    assert info.status == "failed"
    assert info.error == (
        "FABRIC_PLUGIN_API must be an integer or a tuple of integers (the plugin API versions the module "
        "supports), got 'one'"
    )
    assert "single_device" in STRATEGY_REGISTRY


def test_names_registered_while_an_incompatible_plugin_is_imported_are_removed(
    make_plugin: MakePlugin,
) -> None:
    module = unique_module_name("eager_plugin")
    source = """
        from fabric_core.strategies import STRATEGY_REGISTRY

        FABRIC_PLUGIN_API = (99,)
        STRATEGY_REGISTRY.register("eager_strategy", "fakeplug_nowhere:Eager")
    """
    make_plugin("fakeplugin", {"eager": module}, {module: source})

    info = info_named("eager")

    assert info.status == "incompatible"
    assert "eager_strategy" not in STRATEGY_REGISTRY, "an incompatible plugin is never half-loaded"
    assert info.rolled_back == {"strategies": ["eager_strategy"]}
    assert module in sys.modules


def test_strategies_marks_the_names_a_failed_plugin_had_registered(
    make_plugin: MakePlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    module = unique_module_name("greedy_plugin")
    source = """
        from fabric_core import hookimpl

        FABRIC_PLUGIN_API = 1


        @hookimpl
        def fabric_register_strategies(registry):
            registry.register("greedy_own", "fakeplug_nowhere:Own")
            registry.register("single_device", "fakeplug_nowhere:Hijack")
    """
    make_plugin("fakeplugin", {"greedy": module}, {module: source})

    assert main(["strategies", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert main(["strategies"]) == 0
    text = capsys.readouterr().out

    assert rows["greedy_own"]["buildable"] is False
    assert rows["greedy_own"]["provider"] == "fakeplugin"
    assert rows["greedy_own"]["status"].startswith(
        "plugin failed: DuplicateNameError: The strategy 'single_device'"
    )
    assert rows["single_device"]["provider"] == "fabric-core"
    assert (
        "Plugins that did not load (the strategies they provide are missing; see `fabric plugins`):" in text
    )
    assert "  greedy (fakeplugin 1.0): failed: DuplicateNameError: " in text


def test_plugins_text_shows_versions_api_and_a_summary(
    make_plugin: MakePlugin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_LOAD_PLUGINS", "good,future")
    good, future = unique_module_name("good_plugin"), unique_module_name("future_plugin")
    make_plugin(
        "fakeplugin",
        {"good": good, "future": future},
        {good: "FABRIC_PLUGIN_API = (1,)\n", future: "FABRIC_PLUGIN_API = (2,)\n"},
    )

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert main(["plugins", "--json"]) == 0
    report = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}

    assert "good  (fakeplugin 1.0)  [loaded]\n" in out
    assert "future  (fakeplugin 1.0)  [incompatible]\n" in out
    assert (
        "  plugin API: 2\n  error:  the plugin supports fabric plugin API version(s) 2, but fabric-core"
        in out
    )
    assert "(2 loaded, 0 failed, 1 incompatible, " in out and "this fabric-core provides plugin API 1." in out
    assert report["future"]["api_versions"] == [2] and report["future"]["version"] == "1.0"
    assert report["good"]["rolled_back"] == {}
