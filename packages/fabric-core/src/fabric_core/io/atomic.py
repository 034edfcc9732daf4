"""Atomic replacement of checkpoint files and directories, and cleanup after killed saves.

A save writes a temporary file next to its target and renames it over the target once the
bytes are on disk, so the target name only ever holds a complete checkpoint. A save that is
killed (SIGKILL, out-of-memory, a lost node) leaves its temporary behind; the next save to
the same directory removes it, unless the process that writes it is still alive.

How a temporary's owner is known to be dead. The temporary is named
``.<target>.fabric-<host>-<pid>-<token>.tmp`` and its writer holds an exclusive ``flock`` on
it until it is renamed or removed. The kernel drops the lock when the writer dies, however
it dies. A temporary is removed only if all of these hold:

- it was written on this host (a pid or a lock seen from another host proves nothing: on
  some network file systems locks are local to the client);
- its pid is not alive here (this alone would misjudge a writer in another pid namespace,
  e.g. a container sharing the hostname, and a pid reused by an unrelated process);
- its lock can be taken (this alone would misjudge the instant between creating the file
  and locking it, which the pid check covers).

Each check errs on the side of keeping the file: at worst a dead save's temporary stays until
a later save finds its pid gone. Where ``fcntl`` does not exist, only the pid check is made.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_directory",
    "atomic_file",
    "fsync_directory",
    "partial_directory",
    "remove_stale_temporaries",
    "replace_path",
    "temporaries_of",
    "temporary_name",
]

_TEMPORARY = re.compile(r"^\..*\.fabric-(?P<host>[A-Za-z0-9_]*)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\.tmp$")
_MAX_TARGET_CHARS = 100  # keeps temporary names well under the usual 255-byte limit


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:64]


def temporary_name(target: Path) -> str:
    """A fresh temporary file name for a save to ``target`` by this process."""
    return f".{target.name[:_MAX_TARGET_CHARS]}.fabric-{_host()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def temporaries_of(target: Path) -> list[Path]:
    """The temporaries of saves to ``target`` that exist now (finished saves leave none)."""
    prefix = f".{target.name[:_MAX_TARGET_CHARS]}.fabric-"
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return sorted(
        target.parent / name for name in names if name.startswith(prefix) and _TEMPORARY.match(name)
    )


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporaries in ``directory`` whose saves died (see the module docstring); return them."""
    try:
        names = [name for name in os.listdir(directory) if name.startswith(".") and name.endswith(".tmp")]
    except OSError:
        return []
    host, removed = _host(), []
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        if _remove_if_unlocked(directory / name):
            removed.append(directory / name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_if_unlocked(path: Path) -> bool:
    if fcntl is None:  # pragma: no cover - Windows: the pid check alone decides
        path.unlink(missing_ok=True)
        return True
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # NFS emulates flock with write locks
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live writer, or locks do not work here: keep it
        os.close(descriptor)
        return False
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(descriptor)
    return True


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """A new, locked temporary file next to ``target``, renamed over it when the block succeeds.

    The file is created with mode ``0o666`` less the umask, as ``open()`` would create
    ``target``. When the block returns, the file is flushed to disk and renamed over
    ``target`` (atomically), and the directory entry is flushed too. When the block raises,
    the temporary is removed and ``target`` is left as it was. Stale temporaries of killed
    saves in the same directory are removed first.
    """
    target = Path(target)
    remove_stale_temporaries(target.parent)
    temporary = target.with_name(temporary_name(target))
    descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield temporary
        os.fsync(descriptor)  # the bytes, whichever descriptor wrote them
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        os.close(descriptor)
    fsync_directory(target.parent)


def partial_directory(target: Path) -> Path:
    """Where a checkpoint directory for ``target`` is written before it is complete: ``.<name>.partial``."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """An empty directory beside ``target`` (see `partial_directory`), put at ``target`` on success.

    What a killed write leaves under the partial name is removed by the next write to
    ``target``; an error in the block removes it at once. One process writes at a time.
    """
    target = Path(target)
    partial = partial_directory(target)
    _remove(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
        replace_path(partial, target)
    except BaseException:
        _remove(partial)
        raise


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk, where the platform allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(source: Path, target: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this file system cannot exchange: fall back to two renames
    raise OSError(code, os.strerror(code), os.fspath(target))


def replace_path(source: Path, target: Path) -> None:
    """Put ``source`` (a finished file or directory) at ``target``, replacing what is there.

    A file, or anything onto a path that does not exist yet, moves with one atomic rename.
    A directory over an existing one is swapped in one step where the file system can
    (Linux ``renameat2``): at no moment is ``target`` missing or partial, and the old
    checkpoint is removed afterwards. Elsewhere the old target is first renamed to
    ``.<name>.old`` beside it; a process killed between the two renames leaves ``target``
    missing and the previous checkpoint complete under that name (``fabric.load`` says so).
    """
    source, target = Path(source), Path(target)
    exists = target.exists() or target.is_symlink()
    if not exists or (not source.is_dir() and not target.is_dir()):
        os.replace(source, target)
    elif _exchange(source, target):
        _remove(source)  # now the old checkpoint
    else:
        old = target.with_name(f".{target.name}.old")
        _remove(old)
        os.replace(target, old)
        os.replace(source, target)
        _remove(old)
    fsync_directory(target.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
