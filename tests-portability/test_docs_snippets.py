"""Every Python code block of the docs and the README runs as pasted (see `docs_snippets`).

A block that needs several processes runs under ``fabric run``; one that needs hardware
this machine lacks is marked on its page and reported here as skipped, with the reason.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
from docs_snippets import Snippet, collect, run

SNIPPETS = collect()


def test_the_docs_have_code_blocks_to_run() -> None:
    pages = {snippet.page for snippet in SNIPPETS if not snippet.skip}
    assert "README.md" in pages and "docs/guide/fabric.md" in pages and len(pages) >= 10, sorted(pages)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.name for snippet in SNIPPETS])
def test_code_block_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.skip:
        pytest.skip(snippet.skip)
    if snippet.needs and importlib.util.find_spec(snippet.needs) is None:
        pytest.skip(f"needs {snippet.needs}, which is not installed here")
    run(snippet, tmp_path)


def _page(tmp_path: Path, text: str) -> list[Snippet]:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text))
    return collect([page], root=tmp_path)


def test_markers_join_launch_and_skip_blocks(tmp_path: Path) -> None:
    snippets = _page(
        tmp_path,
        """\
        ```python
        a = 1
        ```
        <!-- test: continue -->
        ```python
        print(a)
        ```
        ```bash
        not python
        ```
        <!-- test: launch 2 -->

        ```python
        b = 2
        ```
        === "A tab"

            <!-- test: skip; needs 8 GPUs -->
            ```python
            c = 3
            ```
        """,
    )
    assert [(s.line, s.code, s.processes, s.skip) for s in snippets] == [
        (1, "a = 1\n\nprint(a)\n", 0, ""),
        (13, "b = 2\n", 2, ""),
        (19, "c = 3\n", 0, "needs 8 GPUs"),
    ]
    assert _page(tmp_path, "<!-- test: needs tensorboard -->\n```python\nimport tensorboard\n```\n")[
        0
    ].needs == ("tensorboard")


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("<!-- test: skip -->", "needs a reason"),
        ("<!-- test: lauch 2 -->", "unknown marker <!-- test: lauch 2 -->"),
        ("<!-- test: continue -->", "nothing to continue"),
    ],
)
def test_a_malformed_marker_is_an_error_not_a_silent_skip(tmp_path: Path, marker: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _page(tmp_path, f"{marker}\n```python\nx = 1\n```\n")


def test_a_failing_block_reports_where_it_is_on_the_page(tmp_path: Path) -> None:
    snippet = Snippet(page="docs/x.md", code="raise SystemExit('broken')\n", lines=[7, 12])
    with pytest.raises(AssertionError, match=r"docs/x.md:7, docs/x.md:12 failed \(exit 1\):\nbroken"):
        run(snippet, tmp_path)
