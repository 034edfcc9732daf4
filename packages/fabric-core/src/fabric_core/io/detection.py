"""Which registered checkpoint format a directory is (file names only, nothing read).

Its own module so that the error messages (``diagnose``) and the file I/O
(``checkpoint_io``) can name a directory's format without importing the formats, which
use both.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["detect_format"]


def detect_format(path: str | Path) -> str | None:
    """The name of the registered format that recognises the directory ``path``, or None."""
    from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY

    path = Path(path)
    if not path.is_dir():
        return None
    for name in CHECKPOINT_FORMAT_REGISTRY.available():
        try:
            if CHECKPOINT_FORMAT_REGISTRY.get_class(name).detect(path):
                return name
        except ImportError:  # a format whose distribution is only partly installed
            continue
    return None
