"""Plugin discovery through the ``fabric`` entry-point group, with fake distributions on disk."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import torch
from core_helpers import run_python, unique_module_name, write_distribution

from fabric_core import PLUGIN_API_VERSION, Fabric
from fabric_core._registries import ACCELERATOR_REGISTRY, PRECISION_REGISTRY
from fabric_core.plugins import PluginInfo, plugin_infos
from fabric_core.registry import UnknownNameError
from fabric_core.strategies import STRATEGY_REGISTRY, SingleDeviceStrategy

MakePlugin = Callable[..., Path]

STRATEGY_SOURCE = """
    from fabric_core.strategies import SingleDeviceStrategy


    class FakeStrategy(SingleDeviceStrategy):
        def __init__(self, marker=0, **kwargs):
            super().__init__(**kwargs)
            self.marker = marker
"""


def good_plugin_source(strategy_module: str, strategy_name: str = "fake_strategy") -> str:
    return f"""
        from fabric_core import hookimpl

        FABRIC_PLUGIN_API = (1,)
        HOOK_CALLS = []


        @hookimpl
        def fabric_register_strategies(registry):
            HOOK_CALLS.append("strategies")
            registry.register(
                "{strategy_name}", "{strategy_module}:FakeStrategy", description="A fake strategy", marker=7
            )
    """


def is_installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def info_named(name: str) -> PluginInfo:
    matches = [info for info in plugin_infos() if info.name == name]
    assert len(matches) == 1, f"expected one plugin record named {name!r}, got {plugin_infos()}"
    return matches[0]


def test_builtin_core_plugin_is_listed_first_as_loaded(fresh_plugins: None) -> None:
    core = plugin_infos()[0]

    assert (core.name, core.distribution, core.status, core.error) == ("core", "fabric-core", "loaded", "")
    assert core.registered["strategies"] == ["single_device", "dp"]
    assert "fabric_register_precisions" in core.hooks


def test_good_plugin_registers_a_strategy_whose_module_is_imported_only_when_built(
    make_plugin: MakePlugin,
) -> None:
    plugin_module = unique_module_name("good_plugin")
    strategy_module = unique_module_name("good_strategy")
    make_plugin(
        "fakeplugin",
        {"fake": plugin_module},
        {plugin_module: good_plugin_source(strategy_module), strategy_module: STRATEGY_SOURCE},
    )
    assert plugin_module not in sys.modules, "discovery must wait for the first registry use"

    assert "fake_strategy" in STRATEGY_REGISTRY

    assert plugin_module in sys.modules
    assert strategy_module not in sys.modules, "a plugin's strategy module is imported only when built"
    entry = STRATEGY_REGISTRY.entry("fake_strategy")
    assert (entry.provider, entry.description) == ("fakeplugin", "A fake strategy")
    info = info_named("fake")
    assert (info.status, info.distribution, info.version, info.module) == (
        "loaded",
        "fakeplugin",
        "1.0",
        plugin_module,
    )
    assert info.hooks == ["fabric_register_strategies"]
    assert info.registered == {"strategies": ["fake_strategy"]}

    fabric = Fabric(accelerator="cpu", strategy="fake_strategy")

    assert strategy_module in sys.modules
    assert type(fabric.strategy).__name__ == "FakeStrategy"
    assert fabric.strategy.marker == 7
    model = fabric.setup(torch.nn.Linear(2, 1))
    assert model(torch.ones(1, 2)).shape == (1, 1)


def test_discovery_runs_once_on_first_registry_use(make_plugin: MakePlugin) -> None:
    plugin_module = unique_module_name("counted_plugin")
    strategy_module = unique_module_name("counted_strategy")
    make_plugin(
        "fakeplugin",
        {"fake": plugin_module},
        {plugin_module: good_plugin_source(strategy_module), strategy_module: STRATEGY_SOURCE},
    )

    STRATEGY_REGISTRY.available()
    ACCELERATOR_REGISTRY.available()
    assert "bf16-mixed" in PRECISION_REGISTRY
    plugin_infos()
    Fabric(accelerator="cpu")

    assert sys.modules[plugin_module].HOOK_CALLS == ["strategies"]


def test_plugin_that_fails_to_import_is_recorded_and_core_keeps_working(make_plugin: MakePlugin) -> None:
    broken = unique_module_name("broken_plugin")
    make_plugin(
        "fakeplugin", {"broken": broken}, {broken: "raise RuntimeError('plugin exploded on import')\n"}
    )

    info = info_named("broken")

    assert info.status == "failed"
    assert info.error == "import failed: RuntimeError: plugin exploded on import"
    assert "single_device" in STRATEGY_REGISTRY
    fabric = Fabric(accelerator="cpu", devices=1)
    assert isinstance(fabric.strategy, SingleDeviceStrategy)


def test_unknown_name_mentions_plugins_that_did_not_load(make_plugin: MakePlugin) -> None:
    broken = unique_module_name("broken_plugin")
    make_plugin("fakeplugin", {"broken": broken}, {broken: "raise ImportError('needs a missing library')\n"})

    with pytest.raises(UnknownNameError) as excinfo:
        Fabric(accelerator="cpu", strategy="my_custom_strategy")

    message = str(excinfo.value)
    assert "Unknown strategy 'my_custom_strategy'" in message
    assert "single_device" in message
    assert "'broken' (fakeplugin): import failed: ImportError: needs a missing library" in message


def test_plugin_requiring_another_api_version_is_incompatible(make_plugin: MakePlugin) -> None:
    future = unique_module_name("future_plugin")
    strategy_module = unique_module_name("future_strategy")
    source = good_plugin_source(strategy_module, "future_strategy").replace("(1,)", "(99,)")
    make_plugin("fakeplugin", {"future": future}, {future: source})

    info = info_named("future")

    assert info.status == "incompatible"
    assert "99" in info.error
    assert f"provides version {PLUGIN_API_VERSION}" in info.error
    assert "future_strategy" not in STRATEGY_REGISTRY
    assert sys.modules[future].HOOK_CALLS == [], "an incompatible plugin's hooks are never called"


def test_plugin_registering_a_taken_name_fails_and_its_other_names_are_rolled_back(
    make_plugin: MakePlugin,
) -> None:
    greedy = unique_module_name("greedy_plugin")
    source = """
        from fabric_core import hookimpl


        @hookimpl
        def fabric_register_accelerators(registry):
            registry.register("fake_accelerator", "fakeplug_nowhere:FakeAccelerator")


        @hookimpl
        def fabric_register_strategies(registry):
            registry.register("fake_other", "fakeplug_nowhere:Other")
            registry.register("single_device", "fakeplug_nowhere:Hijack")
    """
    make_plugin("fakeplugin", {"greedy": greedy}, {greedy: source})

    info = info_named("greedy")

    assert info.status == "failed"
    assert "DuplicateNameError" in info.error and "'single_device' is already registered" in info.error
    assert info.registered == {}
    assert "fake_other" not in STRATEGY_REGISTRY
    assert "fake_accelerator" not in ACCELERATOR_REGISTRY
    assert STRATEGY_REGISTRY.entry("single_device").provider == "fabric-core"
    assert isinstance(Fabric(accelerator="cpu").strategy, SingleDeviceStrategy)


def test_one_broken_plugin_does_not_stop_a_good_one(make_plugin: MakePlugin) -> None:
    good = unique_module_name("good_plugin")
    strategy_module = unique_module_name("good_strategy")
    broken = unique_module_name("broken_plugin")
    make_plugin("brokenplugin", {"broken": broken}, {broken: "raise ValueError('bad')\n"})
    make_plugin(
        "goodplugin",
        {"good": good},
        {good: good_plugin_source(strategy_module), strategy_module: STRATEGY_SOURCE},
    )

    assert info_named("broken").status == "failed"
    assert info_named("good").status == "loaded"
    assert Fabric(accelerator="cpu", strategy="fake_strategy").strategy.marker == 7


def test_plugin_implementing_an_unknown_hook_is_failed(make_plugin: MakePlugin) -> None:
    odd = unique_module_name("odd_plugin")
    source = """
        from fabric_core import hookimpl


        @hookimpl
        def fabric_register_widgets(registry):
            registry.register("widget", "fakeplug_nowhere:Widget")
    """
    make_plugin("fakeplugin", {"odd": odd}, {odd: source})

    info = info_named("odd")

    assert info.status == "failed"
    assert "unknown hook 'fabric_register_widgets'" in info.error


def test_entry_point_naming_a_function_instead_of_a_module_is_failed(make_plugin: MakePlugin) -> None:
    module = unique_module_name("function_plugin")
    make_plugin("fakeplugin", {"func": f"{module}:register"}, {module: "def register():\n    pass\n"})

    info = info_named("func")

    assert info.status == "failed"
    assert "must name a module" in info.error


@pytest.mark.skipif(is_installed("fabric-deepspeed"), reason="needs fabric-deepspeed to be absent")
def test_failed_first_party_plugin_explains_why_its_strategy_is_missing(make_plugin: MakePlugin) -> None:
    module = unique_module_name("deepspeed_plugin")
    make_plugin(
        "fabric-deepspeed",
        {"deepspeed": module},
        {module: "raise ImportError(\"No module named 'deepspeed'\")\n"},
    )

    with pytest.raises(UnknownNameError) as direct:
        STRATEGY_REGISTRY.get("deepspeed")
    with pytest.raises(UnknownNameError) as through_fabric:
        Fabric(accelerator="cpu", strategy="deepspeed_stage_3")

    assert "provided by the plugin 'deepspeed' (fabric-deepspeed 1.0), which is not loaded" in str(
        direct.value
    )
    assert "'deepspeed_stage_3' is provided by the plugin 'deepspeed'" in str(through_fabric.value)
    for message in (str(direct.value), str(through_fabric.value)):
        assert "import failed: ImportError: No module named 'deepspeed'" in message
        assert "pip install" not in message, "the plugin is installed; reinstalling is not the advice"


@pytest.mark.parametrize("selector", ["fake", "fakeplugin", "FakePlugin"])
def test_fabric_disable_plugins_skips_the_named_plugin(
    make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch, selector: str
) -> None:
    module = unique_module_name("disabled_plugin")
    strategy_module = unique_module_name("disabled_strategy")
    monkeypatch.setenv("FABRIC_DISABLE_PLUGINS", f"something_else, {selector}")
    make_plugin(
        "fakeplugin",
        {"fake": module},
        {module: good_plugin_source(strategy_module), strategy_module: STRATEGY_SOURCE},
    )

    info = info_named("fake")

    assert (info.status, info.error) == ("disabled", "disabled by FABRIC_DISABLE_PLUGINS")
    assert module not in sys.modules, "a disabled plugin is never imported"
    assert "fake_strategy" not in STRATEGY_REGISTRY
    assert "single_device" in STRATEGY_REGISTRY, "the core plugin cannot be disabled"


def test_fabric_load_plugins_loads_only_the_listed_plugins(
    make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = unique_module_name("wanted_plugin")
    wanted_strategy = unique_module_name("wanted_strategy")
    unwanted = unique_module_name("unwanted_plugin")
    unwanted_strategy = unique_module_name("unwanted_strategy")
    monkeypatch.setenv("FABRIC_LOAD_PLUGINS", "wanted")
    make_plugin(
        "wantedplugin",
        {"wanted": wanted},
        {wanted: good_plugin_source(wanted_strategy, "wanted_strategy"), wanted_strategy: STRATEGY_SOURCE},
    )
    make_plugin(
        "unwantedplugin",
        {"unwanted": unwanted},
        {
            unwanted: good_plugin_source(unwanted_strategy, "unwanted_strategy"),
            unwanted_strategy: STRATEGY_SOURCE,
        },
    )

    assert "wanted_strategy" in STRATEGY_REGISTRY
    assert "unwanted_strategy" not in STRATEGY_REGISTRY
    assert info_named("wanted").status == "loaded"
    unwanted_info = info_named("unwanted")
    assert (unwanted_info.status, unwanted_info.error) == ("disabled", "not listed in FABRIC_LOAD_PLUGINS")
    assert unwanted not in sys.modules


def test_importing_fabric_core_loads_no_plugin_and_not_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_module = unique_module_name("subprocess_plugin")
    strategy_module = unique_module_name("subprocess_strategy")
    write_distribution(
        tmp_path,
        "fakeplugin",
        {"fake": plugin_module},
        {plugin_module: good_plugin_source(strategy_module), strategy_module: STRATEGY_SOURCE},
    )
    code = f"""
        import json, sys
        import fabric_core
        import fabric_core.registry, fabric_core._registries
        after_import = {{
            "torch": "torch" in sys.modules,
            "plugin": {plugin_module!r} in sys.modules,
            "builtin": "fabric_core._builtin_plugin" in sys.modules,
            "pluggy": "pluggy" in sys.modules,
        }}
        names = fabric_core._registries.STRATEGY_REGISTRY.available()
        after_discovery = {{
            "torch": "torch" in sys.modules,
            "plugin": {plugin_module!r} in sys.modules,
            "strategy": {strategy_module!r} in sys.modules,
            "names": names,
        }}
        print(json.dumps({{"after_import": after_import, "after_discovery": after_discovery}}))
    """

    monkeypatch.setenv("FABRIC_LOAD_PLUGINS", "fake")  # other installed plugins are not under test here
    result = run_python(code, extra_path=tmp_path)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == {"torch": False, "plugin": False, "builtin": False, "pluggy": False}
    assert report["after_discovery"] == {
        "torch": False,
        "plugin": True,
        "strategy": False,
        "names": ["single_device", "dp", "fake_strategy"],
    }
