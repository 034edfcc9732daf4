"""`fabric plugin new`, as an outside author runs it: in a fresh environment holding fabric-core and
fabric-ddp from their wheels, the plugin it writes installs, is discovered, and passes its own
conformance tests there. And the guide's other complete plugin, fabric-localsgd, is shown on the
guide's page as it is in plugins/."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import PLUGINS
from venvs import ROOT, FreshEnvironment, uv, uv_environment

NAME = "clipped_sgd"
NAMES = ["clipped_sgd", "clipped_sgd_spawn", "clipped_sgd_fork"]


def test_a_new_plugin_installs_and_passes_its_own_conformance_tests(tmp_path: Path, wheelhouse: Any) -> None:
    env = FreshEnvironment(tmp_path / "venv", [wheelhouse["fabric-core"], wheelhouse["fabric-ddp"]])
    written = env.run("fabric", "plugin", "new", NAME, "--dir", str(tmp_path / "work"))
    root = tmp_path / "work" / "fabric-clipped-sgd"
    assert f"cd {root}" in written.stdout, written.stdout

    # What the printed next step does (pip install -e ".[test]"), as a wheel: the way users get it.
    install = [uv(), "pip", "install", "--quiet", "--python", str(env.python_path), f"{root}[test]"]
    subprocess.run(install, check=True, env=uv_environment())

    rows = {row["name"]: row for row in json.loads(env.run("fabric", "strategies", "--json").stdout)}
    assert [rows[name]["provider"] for name in NAMES] == ["fabric-clipped-sgd"] * 3
    assert all(rows[name]["status"] == "available" for name in NAMES), rows
    result = env.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=root, check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert summary.startswith("24 passed"), summary  # 12 checks, with and without clipping
    located = env.python("import fabric_clipped_sgd; print(fabric_clipped_sgd.__file__)").stdout
    assert str(env.path) in located, "the tests must import the installed package, not the source tree"


def test_the_guide_shows_every_file_of_the_example_plugin_unchanged() -> None:
    text = (ROOT / "docs" / "guide" / "write-a-plugin.md").read_text()
    page = re.sub(r"^(`{3,})(?:toml|python|markdown)$", r"\1", text, flags=re.MULTILINE)  # fences bare
    example = PLUGINS / "fabric-localsgd"
    files = sorted(p for p in example.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert len(files) == 9, files
    for path in files:
        relative, source = path.relative_to(example).as_posix(), path.read_text()
        fence = "````" if "```" in source else "```"
        assert f"### `{relative}`\n" in page and f"{fence}\n{source}{fence}\n" in page, (
            f"docs/guide/write-a-plugin.md must show {relative} as it is, under its heading at the end of the page"
        )
