"""Expanding SLURM's compressed host lists (``SLURM_NODELIST``) into host names."""

from __future__ import annotations

import re
from collections.abc import Iterator

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def expand_hostlist(text: str) -> list[str]:
    """Expand a SLURM host list into the host names it stands for, in order.

    The syntax is the one ``scontrol show hostnames`` understands:

    - groups separated by commas: ``a1,b2`` → ``a1``, ``b2``;
    - a bracket of numbers and ranges, separated by commas: ``node[1-3,7]`` →
      ``node1``, ``node2``, ``node3``, ``node7``;
    - zero padding, taken from the width of the range's first number: ``gpu-[08-10]`` →
      ``gpu-08``, ``gpu-09``, ``gpu-10``;
    - text before and after a bracket, and several brackets in one name (the rightmost
      varies fastest): ``c-[1-2]x`` → ``c-1x``, ``c-2x``; ``r[1-2]n[1-2]`` → ``r1n1``,
      ``r1n2``, ``r2n1``, ``r2n2``.

    Args:
        text: The host list, e.g. ``"a[1-2],b3,c-[10-11]x"``.

    Returns:
        The host names, e.g. ``["a1", "a2", "b3", "c-10x", "c-11x"]``.

    Raises:
        ValueError: The text is empty or malformed (unbalanced brackets, an empty group, a
            range that is not ``low-high`` with ``low <= high``).
    """
    return list(iter_hostlist(text))


def iter_hostlist(text: str) -> Iterator[str]:
    """Like `expand_hostlist`, lazily (the first host without expanding the rest).

    Raises:
        ValueError: As `expand_hostlist`.
    """
    if not text or not text.strip():
        raise ValueError("The host list is empty; expected something like 'node[1-4]'.")
    for group in _split_groups(text.strip(), text):
        yield from _expand_group(group, text)


def _split_groups(text: str, original: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    groups: list[str] = []
    depth, start = 0, 0
    for index, character in enumerate(text):
        if character == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"Nested '[' in the host list {original!r}.")
        elif character == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced ']' in the host list {original!r}.")
        elif character == "," and depth == 0:
            groups.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise ValueError(f"Unclosed '[' in the host list {original!r}.")
    groups.append(text[start:])
    for group in groups:
        if not group.strip():
            raise ValueError(f"The host list {original!r} has an empty entry (two commas in a row?).")
    return [group.strip() for group in groups]


def _expand_group(group: str, original: str) -> Iterator[str]:
    """Expand one comma-free group: literal text alternating with bracketed ranges.

    Every range is checked before the first name is produced; names are produced lazily.
    """
    parts: list[str | list[tuple[int, int, int]]] = []
    for piece in re.split(r"(\[[^\]]*\])", group):
        if piece.startswith("["):
            parts.append(_parse_ranges(piece[1:-1], original))
        elif piece:
            parts.append(piece)
    yield from _product(parts)


def _product(parts: list[str | list[tuple[int, int, int]]]) -> Iterator[str]:
    """All names of ``parts`` in order, the rightmost bracket varying fastest."""
    if not parts:
        yield ""
        return
    head, rest = parts[0], parts[1:]
    if isinstance(head, str):
        for tail in _product(rest):
            yield head + tail
        return
    for low, high, width in head:
        for number in range(low, high + 1):
            prefix = str(number).zfill(width)
            for tail in _product(rest):
                yield prefix + tail


def _parse_ranges(body: str, original: str) -> list[tuple[int, int, int]]:
    """Parse ``1-3,07`` into ``[(1, 3, 1), (7, 7, 2)]``: low, high and zero-padded width."""
    ranges: list[tuple[int, int, int]] = []
    for item in body.split(","):
        match = _RANGE.fullmatch(item.strip())
        if match is None:
            raise ValueError(
                f"The host list {original!r} has the bracket entry {item!r}; expected a number or a "
                "range like '01-04'."
            )
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise ValueError(f"The range '{low}-{high}' in the host list {original!r} runs backwards.")
        ranges.append((int(low), int(high), len(low)))
    return ranges
