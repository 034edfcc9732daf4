"""The ``fabric`` command line: listings, JSON output, and a start-up without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from core_helpers import run_python

from fabric_core.__about__ import __version__
from fabric_core.cli import build_parser, main


def test_strategies_lists_the_core_strategies_and_what_else_to_install(
    capsys: pytest.CaptureFixture[str], without_distribution: Callable[[str], None]
) -> None:
    without_distribution("fabric-ddp")

    assert main(["strategies"]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PROVIDER", "STATUS", "DESCRIPTION"]
    single = next(line for line in lines if line.startswith("single_device "))
    assert "fabric-core" in single and "available" in single
    assert any(line.startswith("dp ") for line in lines)
    assert "More strategies come with:" in out
    assert "fabric-ddp" in out.split("More strategies come with:")[1]


def test_strategies_json_has_one_row_per_name_with_status(
    capsys: pytest.CaptureFixture[str], without_distribution: Callable[[str], None]
) -> None:
    without_distribution("fabric-ddp")

    assert main(["strategies", "--json"]) == 0

    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["single_device"] == {
        "name": "single_device",
        "description": "One process on one device (what 'auto' picks for a single device)",
        "provider": "fabric-core",
        "status": "available",
        "buildable": True,
    }
    assert rows["dp"]["buildable"] is True
    assert rows["ddp"] == {
        "name": "ddp",
        "description": "",
        "provider": "fabric-ddp",
        "status": "not installed (pip install fabric-ddp)",
        "buildable": False,
    }
    assert all(
        set(row) == {"name", "description", "provider", "status", "buildable"} for row in rows.values()
    )


def test_plugins_json_reports_the_core_plugin_and_discovery_time(
    capsys: pytest.CaptureFixture[str], fresh_plugins: None
) -> None:
    assert main(["plugins", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    core = report["plugins"][0]
    assert core["name"] == "core" and core["distribution"] == "fabric-core" and core["version"] == __version__
    assert core["status"] == "loaded" and core["error"] == ""
    assert core["registered"]["strategies"] == ["single_device", "dp"]
    assert core["registered"]["precisions"] == [
        "32-true",
        "64-true",
        "16-true",
        "bf16-true",
        "16-mixed",
        "bf16-mixed",
    ]
    assert report["discovery_ms"] >= 0


def test_plugins_text_lists_each_plugin_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0

    out = capsys.readouterr().out
    assert f"core  (fabric-core {__version__})  [loaded]" in out
    assert "strategies: single_device, dp" in out
    assert "Discovery took" in out


def test_env_json_reports_versions_devices_and_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy
    import pluggy
    import torch

    assert main(["env", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["fabric-core"] == __version__
    assert report["torch"] == torch.__version__
    assert report["numpy"] == numpy.__version__
    assert report["pluggy"] == pluggy.__version__
    assert {"deepspeed", "torch_xla"} <= set(report)
    assert report["python"] == sys.version.split()[0]
    assert report["cuda available"] is torch.cuda.is_available()
    assert report["cluster environment"] == "LocalEnvironment"
    assert any(line.startswith("core (fabric-core") for line in report["plugins"])


def test_env_text_lists_the_fabric_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_GLOBAL_SEED", "17")

    assert main(["env"]) == 0

    out = capsys.readouterr().out
    assert "fabric-core: " in out
    assert "  - FABRIC_GLOBAL_SEED=17" in out


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2

    assert "strategies" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["deploy"])

    assert excinfo.value.code == 2
    assert "invalid choice: 'deploy'" in capsys.readouterr().err


def test_parser_offers_the_listing_commands() -> None:
    parser = build_parser()

    assert parser.prog == "fabric"
    assert parser.parse_args(["plugins", "--json"]).json is True


def test_python_m_fabric_core_help_does_not_import_torch() -> None:
    result = run_python(
        """
        import sys
        sys.argv = ["fabric", "--help"]
        import runpy
        try:
            runpy.run_module("fabric_core", run_name="__main__")
        except SystemExit as exit:
            print("exit code:", exit.code)
        print("torch imported:", "torch" in sys.modules)
        """
    )

    assert result.returncode == 0, result.stderr
    assert "usage: fabric" in result.stdout
    assert "exit code: 0" in result.stdout
    assert "torch imported: False" in result.stdout


def test_fabric_strategies_does_not_import_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_LOAD_PLUGINS", "none-but-core")  # installed plugins are not under test here
    result = run_python(
        """
        import sys
        from fabric_core.cli import main
        code = main(["strategies", "--json"])
        print("torch imported:", "torch" in sys.modules, "exit code:", code)
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch imported: False exit code: 0")
    assert '"name": "single_device"' in result.stdout


def test_python_m_fabric_core_help_imports_no_torch_module_at_all() -> None:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fabric_core", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0
    assert "strategies" in completed.stdout and "plugins" in completed.stdout and "env" in completed.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines() if "|" in line}
    assert "fabric_core.cli" in imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


def test_version_flag_prints_the_fabric_core_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fabric-core {__version__}"


def test_another_distributions_fabric_command_is_named_with_the_form_that_always_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "lightning-2.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lightning\nVersion: 2.9\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nfabric = lightning.fabric.cli:_main\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert main(["plugins"]) == 0

    err = capsys.readouterr().err
    assert "lightning also install(s) a `fabric` command" in err
    assert "python -m fabric_core" in err
