"""Most tests here start real processes; the time limit per test is in pyproject.toml (pytest-timeout)."""

from __future__ import annotations

from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
"""The scripts the tests run in fresh processes (also on ``sys.path``, see pyproject.toml)."""
