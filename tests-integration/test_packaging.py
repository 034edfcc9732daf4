"""What every published distribution carries: the licence, the typing marker, metadata for the index."""

from __future__ import annotations

import subprocess
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from venvs import ROOT, uv, uv_environment

DISTRIBUTIONS = sorted(
    path.name for path in (ROOT / "packages").iterdir() if (path / "pyproject.toml").exists()
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel and an sdist of every distribution under packages/, built in one uv call each."""
    out_dir = tmp_path_factory.mktemp("dist")
    for name in DISTRIBUTIONS:
        subprocess.run(
            [uv(), "build", "--quiet", "--out-dir", str(out_dir), str(ROOT / "packages" / name)],
            check=True,
            env=uv_environment(),
        )
    return out_dir


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_wheel_and_sdist_carry_license_typing_marker_and_index_metadata(built: Path, name: str) -> None:
    module = name.replace("-", "_")
    (wheel,) = built.glob(f"{module}-*.whl")
    (sdist,) = built.glob(f"{module}-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        metadata_file = next(file for file in files if file.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_file).decode())
    assert f"{module}/py.typed" in files
    assert any(file.endswith(".dist-info/licenses/LICENSE") for file in files), files
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(member.endswith("/LICENSE") for member in members)
    assert any(member.endswith(f"/{module}/py.typed") for member in members)

    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Author"] or metadata["Author-email"]
    assert metadata["Summary"] and len(metadata["Summary"]) <= 120
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    classifiers = metadata.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and any(c.startswith("Development Status") for c in classifiers)
    # The index shows the README as the description: it must be there and be Markdown.
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip().startswith("#")
