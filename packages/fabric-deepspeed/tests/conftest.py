"""Tests that start DeepSpeed processes; the hard time limit per test is in pyproject.toml (pytest-timeout).

DeepSpeed's first start in a process costs seconds (import, engine set-up), so each launch
runs several checks; the limit leaves room for a slow, busy machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fabric_core.testing.processes import run_process

SCRIPTS = Path(__file__).parent / "scripts"


def launch(script: str, *args: str, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    result = run_process(
        [sys.executable, str(SCRIPTS / script), *args],
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result
