"""Entry-point discovery of plugin distributions installed into fresh environments."""

from __future__ import annotations

import json

from probes import CROWDED


def test_core_alone_registers_only_its_own_names(fresh_environment):
    env = fresh_environment("fabric-core")
    result = env.run("fabric", "strategies", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {name for name, row in rows.items() if row["buildable"]} == {"single_device", "dp"}
    assert rows["ddp"]["status"] == "not installed (pip install fabric-ddp)"
    assert rows["deepspeed_stage_3"]["status"] == "not installed (pip install fabric-deepspeed)"
    failure = env.python(
        """
        from fabric_core import Fabric
        Fabric(accelerator="cpu", strategy="deepspeed")
        """,
        check=False,
    )
    assert failure.returncode != 0
    assert "pip install fabric-deepspeed" in failure.stderr


def test_installed_plugin_is_discovered_lazily_and_a_broken_one_is_reported(fresh_environment):
    env = fresh_environment(*CROWDED)
    result = env.python(
        """
        import sys
        import fabric_core
        from fabric_core import Fabric
        loaded_on_import = [m for m in sys.modules if m.startswith(("throwaway_plugin", "broken_plugin"))]
        assert loaded_on_import == [], loaded_on_import

        from fabric_core.strategies import STRATEGY_REGISTRY
        assert "throwaway" in STRATEGY_REGISTRY
        assert "throwaway_plugin.plugin" in sys.modules
        assert "throwaway_plugin.strategy" not in sys.modules, "registration must not import the strategy"

        import torch
        fabric = Fabric(accelerator="cpu", strategy="throwaway")
        model = torch.nn.Linear(3, 1)
        model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        for _ in range(3):
            fabric.backward(model(torch.randn(4, 3)).sum())
            optimizer.step()
        assert fabric.strategy.steps == 3
        assert STRATEGY_REGISTRY.entry("throwaway").provider == "fabric-throwaway"
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok"

    plugins = json.loads(env.run("fabric", "plugins", "--json").stdout)["plugins"]
    by_name = {p["name"]: p for p in plugins}
    assert by_name["throwaway"]["status"] == "loaded"
    assert by_name["throwaway"]["registered"]["strategies"] == ["throwaway"]
    assert by_name["broken"]["status"] == "failed"
    assert "broken_plugin needs a library that is not installed" in by_name["broken"]["error"]
    assert by_name["broken"]["distribution"] == "fabric-broken-plugin"
    assert by_name["core"]["status"] == "loaded"


def test_disabled_plugin_is_not_imported(fresh_environment):
    env = fresh_environment(*CROWDED)
    result = env.python(
        """
        import sys
        from fabric_core.strategies import STRATEGY_REGISTRY
        from fabric_core.plugins import plugin_infos
        assert "throwaway" not in STRATEGY_REGISTRY
        assert "throwaway_plugin.plugin" not in sys.modules
        statuses = {i.name: i.status for i in plugin_infos()}
        print(statuses["throwaway"], statuses["broken"])
        """,
        env={"FABRIC_DISABLE_PLUGINS": "fabric-throwaway,broken"},
    )
    assert result.stdout.split() == ["disabled", "disabled"]


def test_help_does_not_import_torch(fresh_environment):
    env = fresh_environment("fabric-core")
    result = env.python(
        """
        import sys
        from fabric_core.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print("torch imported:", "torch" in sys.modules)
        """
    )
    assert result.stdout.strip().endswith("torch imported: False")
