"""Find the Python code blocks of the docs and the README, and run them as a reader would.

Every fenced ``python`` block is a complete script. An HTML comment on the line just
before a fence says how to run it; without one the block runs alone with ``python``:

- ``<!-- test: continue -->``: the block goes on from the previous block of the same page
  (the two run as one script, the way a reader pastes them in order);
- ``<!-- test: launch N -->``: the script runs on N CPU processes under ``fabric run``;
- ``<!-- test: needs MODULE -->``: the block runs where MODULE (an optional dependency,
  such as ``tensorboard``) is installed, and is skipped, saying so, where it is not (the
  ``torch_xla`` blocks run in the xla session, the others in the portability session);
- ``<!-- test: skip; REASON -->``: the block is not run here, for the reason given (hardware
  this machine lacks, a file of a package that another test installs and runs).

A comment of another shape is an error, so a typo cannot skip a block silently.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fabric_core.testing.processes import run_process

__all__ = ["Snippet", "collect", "run"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})\s*(?P<info>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<directive>.*?)\s*-->\s*$")
_LAUNCH = re.compile(r"^launch (?P<processes>[1-9]\d*)$")
_NEEDS = re.compile(r"^needs (?P<module>[A-Za-z_][\w.]*)$")


@dataclass
class Snippet:
    """One script to run: a block and the blocks that continue it.

    Attributes:
        page: The Markdown file, relative to the repository.
        code: The script's text.
        lines: The opening-fence line (1-based) of every block in the script, the first
            block's first.
        processes: How many processes ``fabric run`` starts; 0 runs it with plain ``python``.
        skip: Why the block is not run here; empty when it runs.
        needs: A module the block imports that may not be installed; empty when none.
    """

    page: str
    code: str
    lines: list[int]
    processes: int = 0
    skip: str = ""
    needs: str = ""

    @property
    def line(self) -> int:
        """The line of the first block's opening fence."""
        return self.lines[0]

    @property
    def name(self) -> str:
        """``page:line``, the test's id."""
        return f"{self.page}:{self.line}"


def _blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """``(line, directive, code)`` for each Python block, in order; directive is '' without a marker."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, ticks, info = opening["indent"], opening["ticks"], opening["info"].lower()
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not re.match(rf"^\s*{ticks}\s*$", lines[index]):
            body.append(lines[index])
            index += 1
        index += 1  # past the closing fence
        if info not in ("python", "py"):
            continue
        directive = ""
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        if previous >= 0 and (marker := _MARKER.match(lines[previous])):
            directive = marker["directive"]
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in body))
        yield start + 1, directive, code + "\n"


def _snippets(page: str, text: str) -> Iterator[Snippet]:
    """The page's scripts: blocks joined where a block continues the one before."""
    current: Snippet | None = None
    for line, directive, code in _blocks(text):
        if directive == "continue":
            if current is None:
                raise ValueError(
                    f"{page}:{line}: 'test: continue' on the page's first block; nothing to continue."
                )
            current.code += "\n" + code
            current.lines.append(line)
            continue
        if current is not None:
            yield current
        current = Snippet(page=page, code=code, lines=[line])
        if directive.startswith("skip"):
            reason = directive.removeprefix("skip").lstrip(";").strip()
            if not reason:
                raise ValueError(f"{page}:{line}: 'test: skip' needs a reason: <!-- test: skip; REASON -->.")
            current.skip = reason
        elif launch := _LAUNCH.match(directive):
            current.processes = int(launch["processes"])
        elif needs := _NEEDS.match(directive):
            current.needs = needs["module"]
        elif directive:
            raise ValueError(
                f"{page}:{line}: unknown marker <!-- test: {directive} -->; "
                "use 'continue', 'launch N', 'needs MODULE' or 'skip; REASON'."
            )
    if current is not None:
        yield current


def collect(paths: Iterable[Path] | None = None, root: Path = REPO_ROOT) -> list[Snippet]:
    """Every script of ``paths`` (default: README.md and docs/**/*.md), in page order.

    Pages are named relative to ``root``.
    """
    if paths is None:
        paths = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    found: list[Snippet] = []
    for path in paths:
        page = path.resolve().relative_to(root.resolve()).as_posix()
        found += _snippets(page, path.read_text())
    return found


def run(snippet: Snippet, directory: Path) -> str:
    """Run ``snippet`` in ``directory`` (its working directory); its output.

    Raises:
        AssertionError: The script failed or ran past the time limit; the message holds
            the script's output and where on the page it comes from.
    """
    script = directory / "snippet.py"
    script.write_text(snippet.code)
    command: list[str] = [sys.executable]
    if snippet.processes:
        command += ["-m", "fabric_core", "run", "--accelerator", "cpu", "--devices", str(snippet.processes)]
    command.append(str(script))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    result = run_process(command, timeout=TIMEOUT_S, env=env, cwd=directory, merge_output=True)
    where = ", ".join(f"{snippet.page}:{line}" for line in snippet.lines)
    assert result.returncode == 0, (
        f"the code block at {where} failed (exit {result.returncode}):\n{result.stdout[-6000:]}"
    )
    return result.stdout
