"""Helpers shared by the fabric-core unit tests (imported by the test modules and conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import torch
from torch import nn

FAKE_MODULE_PREFIX = "fakeplug_"
"""Modules written by tests start with this, so fixtures can drop them from ``sys.modules``."""


def unique_module_name(stem: str) -> str:
    """A module name no other test uses (modules stay cached in ``sys.modules``)."""
    return f"{FAKE_MODULE_PREFIX}{stem}_{uuid.uuid4().hex[:8]}"


def write_distribution(
    root: Path, distribution: str, entry_points: dict[str, str], modules: dict[str, str] | None = None
) -> None:
    """Write a distribution's metadata (and its modules) under ``root``, as if installed there.

    Args:
        root: A directory that will be on ``sys.path``.
        distribution: The distribution name, e.g. ``"fabric-ddp"``.
        entry_points: Entry-point name to value in the ``fabric`` group.
        modules: Module name to source code, written as ``root/<name>.py``.
    """
    info = root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[fabric]\n{lines}")
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


def run_python(
    code: str, extra_path: Path | None = None, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment and return the finished process."""
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )


class TinyModel(nn.Module):
    """A small regression model with a custom method and attribute, as user models have."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.layer1 = nn.Linear(4, width)
        self.layer2 = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.tanh(self.layer1(x)))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).squeeze(-1)


def regression_data(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a smooth function the tiny model can learn quickly."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    return x, y
