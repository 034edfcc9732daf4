"""The format of the mistake tables: one user mistake per row, and the one message fabric must answer with.

A row commits the mistake in a fresh temporary directory. The check then requires:

- the expected exception type (or, for a command, a non-zero exit);
- a message that contains every fragment of ``says``: the wrong value, and what to do;
- that fabric raised it, not torch or the operating system: the innermost frame of the
  traceback is in a ``fabric_*`` package (a torch error re-raised ``from`` fabric counts);
- for commands: no Python traceback, and the message printed once (not once per rank).

Rows live in the ``test_mistakes_*.py`` modules, grouped by what the user was doing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest


class CommandFailed(Exception):
    """A command of a row exited non-zero; the message is what it printed (stdout and stderr)."""

    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(output)
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class Mistake:
    """One mistake: ``make(tmp_path)`` commits it and must raise ``raises`` with a message saying ``says``.

    ``once`` is a fragment that must appear exactly once in a command's output (the
    message not repeated per rank); it defaults to the first fragment of ``says``.
    """

    name: str
    make: Callable[[Path], object]
    raises: type[BaseException]
    says: tuple[str, ...]
    once: str | None = field(default=None)

    def __str__(self) -> str:
        return self.name


def fabric_command(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``python -m fabric_core ARGS`` in ``cwd``; raise :class:`CommandFailed` unless it exits 0."""
    return run_command([sys.executable, "-m", "fabric_core", *args], cwd=cwd, env=env, timeout=timeout)


def run_command(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> str:
    """Run ``argv`` in ``cwd``; raise :class:`CommandFailed` with its output unless it exits 0."""
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise CommandFailed(result.returncode, output)
    return output


def check_mistake(mistake: Mistake, tmp_path: Path) -> None:
    """Commit ``mistake`` in ``tmp_path`` and check fabric's answer (see the module docstring)."""
    with pytest.raises(mistake.raises) as info:
        mistake.make(tmp_path)
    error = info.value
    message = str(error)
    missing = [fragment for fragment in mistake.says if fragment not in message]
    assert not missing, f"{mistake.name}: the message lacks {missing}:\n{message}"
    if isinstance(error, CommandFailed):
        assert "Traceback (most recent call last)" not in error.output, (
            f"{mistake.name}: the command printed a traceback:\n{error.output}"
        )
        once = mistake.once or mistake.says[0]
        assert error.output.count(once) == 1, (
            f"{mistake.name}: {once!r} not printed exactly once:\n{error.output}"
        )
        return
    innermost = traceback.extract_tb(info.tb)[-1]
    assert f"{os.sep}fabric_" in innermost.filename, (
        f"{mistake.name}: raised from {innermost.filename}:{innermost.lineno}, not by fabric:\n{message}"
    )
