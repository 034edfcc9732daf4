"""Registries: registering by class, by lazy path and by decorator, lookup, and their errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from core_helpers import unique_module_name

from fabric_core import Fabric
from fabric_core._registries import ACCELERATOR_REGISTRY, PRECISION_REGISTRY
from fabric_core.registry import DIRECT_PROVIDER, DuplicateNameError, RegistryError, UnknownNameError
from fabric_core.strategies import STRATEGY_REGISTRY, SingleDeviceStrategy, StrategyRegistry


class RecordingStrategy(SingleDeviceStrategy):
    """A single-device strategy that remembers its construction arguments."""

    def __init__(self, tag: str = "none", level: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tag = tag
        self.level = level


class OtherStrategy(SingleDeviceStrategy):
    pass


@pytest.fixture
def registry() -> StrategyRegistry:
    return StrategyRegistry()


@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on ``sys.path`` that defines ``LazyStrategy`` and is not imported yet."""
    name = unique_module_name("lazy_strategy")
    (tmp_path / f"{name}.py").write_text(
        "from fabric_core.strategies import SingleDeviceStrategy\n\n\n"
        "class LazyStrategy(SingleDeviceStrategy):\n"
        '    """Built from a lazily imported module."""\n\n'
        "    def __init__(self, flavour='plain', **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.flavour = flavour\n\n\n"
        "def not_a_class():\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_register_a_class_and_build_it_with_its_init_params(registry: StrategyRegistry) -> None:
    returned = registry.register(
        "recording", RecordingStrategy, description="records", tag="registered", level=2
    )

    assert returned is RecordingStrategy
    assert "recording" in registry
    assert registry.get_class("recording") is RecordingStrategy
    assert registry.get("recording") is RecordingStrategy, "get returns the class, as the seed says"
    strategy = registry.build("recording")
    assert isinstance(strategy, RecordingStrategy)
    assert (strategy.tag, strategy.level) == ("registered", 2)


def test_build_overrides_registered_init_params_with_keyword_arguments(registry: StrategyRegistry) -> None:
    registry.register("recording", RecordingStrategy, tag="registered", level=2)

    strategy = registry.build("recording", level=5)

    assert (strategy.tag, strategy.level) == ("registered", 5)
    assert registry.entry("recording").init_params == {"tag": "registered", "level": 2}, (
        "overrides are per call"
    )


def test_register_module_path_imports_the_module_only_when_the_class_is_needed(
    registry: StrategyRegistry, lazy_module: str
) -> None:
    registry.register("lazy", f"{lazy_module}:LazyStrategy", description="lazy one", flavour="spicy")

    assert "lazy" in registry
    assert registry.available() == ["lazy"]
    assert "lazy one" in registry.describe()
    assert registry.entry("lazy").target_path == f"{lazy_module}:LazyStrategy"
    assert registry.entry("lazy").missing_requirements() == []
    assert lazy_module not in sys.modules, "registering, listing and describing must not import the target"

    cls = registry.get_class("lazy")

    assert lazy_module in sys.modules
    assert cls.__name__ == "LazyStrategy"
    strategy = registry.build("lazy")
    assert isinstance(strategy, cls)
    assert strategy.flavour == "spicy"


def test_build_alone_imports_a_lazy_target(registry: StrategyRegistry, lazy_module: str) -> None:
    registry.register("lazy", f"{lazy_module}:LazyStrategy")
    assert lazy_module not in sys.modules

    strategy = registry.build("lazy", flavour="mild")

    assert lazy_module in sys.modules
    assert strategy.flavour == "mild"


def test_decorator_registers_the_class_and_returns_it_unchanged(registry: StrategyRegistry) -> None:
    @registry.register("decorated", level=3)
    class DecoratedStrategy(RecordingStrategy):
        """First docstring line becomes the description.

        Not this one.
        """

    assert DecoratedStrategy.__name__ == "DecoratedStrategy"
    assert registry.get_class("decorated") is DecoratedStrategy
    assert registry.build("decorated").level == 3
    assert registry.entry("decorated").description == "First docstring line becomes the description."


def test_registering_a_taken_name_fails_unless_override_is_true(registry: StrategyRegistry) -> None:
    registry.register("mine", RecordingStrategy)

    with pytest.raises(DuplicateNameError, match=r"'mine' is already registered .*override=True"):
        registry.register("mine", OtherStrategy)
    assert registry.get_class("mine") is RecordingStrategy

    registry.register("mine", OtherStrategy, override=True)
    assert registry.get_class("mine") is OtherStrategy, "override replaces the class, also after it was built"


@pytest.mark.parametrize("name", [3, None, b"bytes", "", "  padded  "])
def test_names_must_be_non_empty_strings(registry: StrategyRegistry, name: object) -> None:
    with pytest.raises(TypeError, match=r"name must be"):
        registry.register(name, RecordingStrategy)
    assert len(registry) == 0


@pytest.mark.parametrize("target", ["no_colon", "a:b:c", ":Class", "module:", ""])
def test_malformed_target_path_is_refused_at_registration(registry: StrategyRegistry, target: str) -> None:
    with pytest.raises(TypeError, match=r"'module:Class' path"):
        registry.register("broken", target)
    assert "broken" not in registry


def test_an_instance_is_refused_as_target_with_advice_to_register_the_class(
    registry: StrategyRegistry,
) -> None:
    with pytest.raises(
        TypeError, match=r"got an instance of RecordingStrategy.*register\(name, MyClass, arg=value\)"
    ):
        registry.register("instance", RecordingStrategy())


def test_a_target_module_that_cannot_be_imported_gives_an_error_naming_the_entry(
    registry: StrategyRegistry,
) -> None:
    registry.register("ghost", "fakeplug_module_that_does_not_exist:Ghost")

    with pytest.raises(RegistryError) as excinfo:
        registry.get("ghost")

    message = str(excinfo.value)
    assert "strategy 'ghost'" in message
    assert "fakeplug_module_that_does_not_exist:Ghost" in message
    assert "ModuleNotFoundError" in message
    assert DIRECT_PROVIDER in message


def test_a_missing_class_or_a_non_class_target_gives_a_clear_error(
    registry: StrategyRegistry, lazy_module: str
) -> None:
    registry.register("missing_class", f"{lazy_module}:NoSuchStrategy")
    registry.register("function", f"{lazy_module}:not_a_class")

    with pytest.raises(RegistryError, match=r"'missing_class'.*AttributeError"):
        registry.get_class("missing_class")
    with pytest.raises(RegistryError, match=r"'function'.*which is a function, not a class"):
        registry.get_class("function")


def test_missing_requirements_names_uninstalled_modules_without_importing(registry: StrategyRegistry) -> None:
    registry.register(
        "needs_extras", "fakeplug_absent_pkg.mod:Thing", requires=("fakeplug_absent_dep", "torch")
    )

    assert registry.entry("needs_extras").missing_requirements() == [
        "fakeplug_absent_pkg",
        "fakeplug_absent_dep",
    ]


def test_unknown_name_lists_available_names_and_suggests_a_close_match(registry: StrategyRegistry) -> None:
    registry.register("single_device", SingleDeviceStrategy)
    registry.register("recording", RecordingStrategy)

    with pytest.raises(UnknownNameError) as excinfo:
        registry.get("singel_device")

    message = str(excinfo.value)
    assert "Unknown strategy 'singel_device'" in message
    assert "Available strategies: single_device, recording." in message
    assert "Did you mean 'single_device'?" in message
    assert isinstance(excinfo.value, LookupError) and isinstance(excinfo.value, ValueError)


def test_unknown_name_without_a_close_match_makes_no_suggestion(registry: StrategyRegistry) -> None:
    registry.register("recording", RecordingStrategy)

    with pytest.raises(UnknownNameError) as excinfo:
        registry.entry("zzzz")

    assert "Did you mean" not in str(excinfo.value)
    assert "Available strategies: recording." in str(excinfo.value)


def test_a_non_string_lookup_says_names_are_strings(registry: StrategyRegistry) -> None:
    with pytest.raises(UnknownNameError, match=r"must be a string, got int 7"):
        registry.get(7)


@pytest.mark.parametrize(
    ("name", "distribution"),
    [
        ("ddp", "fabric-ddp"),
        ("ddp_spawn", "fabric-ddp"),
        ("deepspeed", "fabric-deepspeed"),
        ("fsdp", "fabric-fsdp"),
        ("xla", "fabric-xla"),
    ],
)
def test_first_party_name_tells_which_distribution_to_install(
    registry: StrategyRegistry, name: str, distribution: str
) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        registry.get(name)

    assert f"pip install {distribution}" in str(excinfo.value)
    assert registry.provider_of(name) == distribution


def test_first_party_accelerator_name_tells_which_distribution_to_install() -> None:
    with pytest.raises(UnknownNameError, match=r"pip install fabric-xla"):
        ACCELERATOR_REGISTRY.get("tpu")


def test_remove_unregisters_a_name_and_refuses_unknown_names(registry: StrategyRegistry) -> None:
    registry.register("recording", RecordingStrategy)
    registry.get("recording")

    registry.remove("recording")

    assert "recording" not in registry
    with pytest.raises(UnknownNameError):
        registry.get("recording")
    with pytest.raises(UnknownNameError, match=r"Unknown strategy 'recording'"):
        registry.remove("recording")


def test_membership_iteration_and_length_follow_registration_order(registry: StrategyRegistry) -> None:
    registry.register("b_second", OtherStrategy)
    registry.register("a_first", RecordingStrategy)

    assert "a_first" in registry
    assert "nope" not in registry
    assert 42 not in registry
    assert list(registry) == ["b_second", "a_first"]
    assert registry.available_strategies() == ["b_second", "a_first"]
    assert len(registry) == 2
    assert [entry.name for entry in registry.entries()] == ["b_second", "a_first"]


def test_describe_lists_names_descriptions_and_providers(registry: StrategyRegistry) -> None:
    assert registry.describe() == "No strategies are registered."
    registry.register("recording", RecordingStrategy, description="Remembers its arguments")
    registry.register("other", OtherStrategy, description="Another one")
    with registry.registering_for("fabric-example"):
        registry.register("plugged", OtherStrategy, description="From a plugin")

    lines = str(registry).splitlines()

    assert lines == [
        f"recording  Remembers its arguments  [{DIRECT_PROVIDER}]",
        f"other      Another one  [{DIRECT_PROVIDER}]",
        "plugged    From a plugin  [fabric-example]",
    ]
    assert registry.entry("plugged").provider == "fabric-example"
    assert "recording" in repr(registry)


def test_core_registries_hold_the_builtin_names() -> None:
    assert {"single_device", "dp"} <= set(STRATEGY_REGISTRY.available_strategies())
    assert {"cpu", "cuda", "gpu", "mps"} <= set(ACCELERATOR_REGISTRY.available_accelerators())
    assert PRECISION_REGISTRY.available() == [
        "32-true",
        "64-true",
        "16-true",
        "bf16-true",
        "16-mixed",
        "bf16-mixed",
    ]
    assert STRATEGY_REGISTRY.entry("single_device").provider == "fabric-core"


def test_direct_registration_in_the_global_registry_is_usable_by_fabric(fresh_plugins: None) -> None:
    STRATEGY_REGISTRY.register("recording", RecordingStrategy, description="test strategy", tag="global")

    fabric = Fabric(accelerator="cpu", strategy="recording")

    assert isinstance(fabric.strategy, RecordingStrategy)
    assert fabric.strategy.tag == "global"
    assert fabric.device == torch.device("cpu")
    assert STRATEGY_REGISTRY.entry("recording").provider == DIRECT_PROVIDER
