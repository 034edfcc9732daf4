"""What went wrong with a checkpoint path or file, in one message that says what to do.

Checkpoint I/O calls these before writing (is the target usable?) and after a failure (was
the disk full, the file truncated, the state unpicklable?), and raises the error they return
``from`` the original one. Strategies that write their own layouts use them too, so every
strategy answers the same mistake with the same words.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "check_save_target",
    "format_bytes",
    "damage",
    "load_error",
    "make_parent",
    "missing_checkpoint",
    "save_error",
    "unpicklable_entry",
]

_ZIP_MAGIC = b"PK\x03\x04"
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
_NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def format_bytes(count: float) -> str:
    """``count`` bytes for people: ``"24 B"``, ``"546.9 KB"``, ``"1.2 GB"`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def check_save_target(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Raise if a checkpoint cannot be written at ``path`` (a file, or with ``directory`` a directory).

    Raises:
        NotADirectoryError: A parent of ``path`` is a file.
        IsADirectoryError: ``path`` is an existing directory and a file is to be written.
        FileExistsError: ``path`` is an existing directory (or file) that is not a checkpoint,
            and a checkpoint directory would replace it and everything in it.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR,
                    f"Cannot save the checkpoint '{path}': '{parent}' is a file, not a directory. Choose a path "
                    "whose parent folders are directories, or move that file away",
                )
            break
    if not directory and path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR,
            f"Cannot save the checkpoint '{path}': it is an existing directory{_holding(path)}, and this "
            f"strategy writes one file. Pass a file path, e.g. '{path / 'checkpoint.pt'}'",
        )
    if directory and path.exists() and not _replaceable_by_directory(path):
        what = "directory" if path.is_dir() else "file"
        raise FileExistsError(
            errno.EEXIST,
            f"Cannot save the checkpoint '{path}': it is an existing {what}{_holding(path)} that is not a "
            f"checkpoint, and a sharded save would replace it. Pass a new path, e.g. '{path / 'checkpoint'}'",
        )


def _holding(directory: Path) -> str:
    if not directory.is_dir():
        return ""
    names = sorted(os.listdir(directory))
    if not names:
        return " (empty)"
    return f" (holding {_first(names, quote=False)})"


def _replaceable_by_directory(path: Path) -> bool:
    """An empty directory, a checkpoint directory of a known format, or a single checkpoint file."""
    if path.is_dir():
        from fabric_core.io.detection import detect_format

        return not os.listdir(path) or detect_format(path) is not None
    return _starts_with(path, _ZIP_MAGIC)


def make_parent(path: str | os.PathLike[str]) -> None:
    """Create the parent directories of ``path``, raising `save_error`'s message if that fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise save_error(error, path) or error from error


def save_error(
    error: BaseException, path: str | os.PathLike[str], checkpoint: Any = None
) -> BaseException | None:
    """The clear error for a save to ``path`` that failed with ``error``, or None if there is none.

    Knows a full disk or quota, a read-only or forbidden directory, and (given the
    ``checkpoint`` being written) an object pickle cannot store, named by its place in the state.
    """
    path = Path(path)
    if isinstance(error, OSError) and error.errno in _FULL_DISK:
        return OSError(
            error.errno,
            f"No space left on the device of '{path.parent}'{_free_space(path.parent)} while writing the "
            f"checkpoint '{path}'. Nothing was written; a previous checkpoint there is unchanged. Free space "
            "(delete old checkpoints) or save to another disk",
        )
    if isinstance(error, OSError) and error.errno in _NO_PERMISSION:
        where = Path(error.filename).parent if error.filename else path.parent
        reason = (
            "is on a read-only file system"
            if error.errno == errno.EROFS
            else "is read-only for this user (permission denied)"
        )
        return PermissionError(
            error.errno,
            f"Cannot write the checkpoint '{path}': the directory '{where}' {reason}. Save to a directory "
            "you can write to, or make this one writable (chmod u+w)",
        )
    if checkpoint is not None and _is_pickling_error(error):
        found = unpicklable_entry(checkpoint)
        if found is not None:
            place, value, reason = found
            return TypeError(
                f"state{place} cannot be saved: it is {_describe(value)}, which pickle cannot store ({reason}). "
                f"Leave it out of the state, or save what it stands for (a name, a number, a state_dict()). "
                f"Nothing was written to '{path}'."
            )
    return None


def _free_space(directory: Path) -> str:
    try:
        return f" ({format_bytes(shutil.disk_usage(directory).free)} free)"
    except OSError:
        return ""


def _is_pickling_error(error: BaseException) -> bool:
    return isinstance(error, pickle.PicklingError) or (
        isinstance(error, (TypeError, AttributeError)) and "pickle" in str(error)
    )


def unpicklable_entry(state: Any) -> tuple[str, Any, str] | None:
    """The first value in ``state`` that pickle cannot store: ``(place, value, reason)``, or None.

    ``place`` is written as an index into the state, e.g. ``"['config']['hook']"``. Dicts,
    lists and tuples are searched entry by entry; tensors are skipped.
    """
    import torch

    for place, value in _leaves(state, ""):
        if isinstance(value, torch.Tensor):
            continue
        try:
            pickle.dumps(value)
        except Exception as error:  # whatever pickling raises names the value
            return place, value, _first_line(error)
    return None


def _leaves(value: Any, place: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, entry in value.items():
            yield from _leaves(entry, f"{place}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, entry in enumerate(value):
            yield from _leaves(entry, f"{place}[{index}]")
    else:
        yield place, value


def _describe(value: Any) -> str:
    name = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(name, str) and name.endswith("<lambda>"):
        return "a lambda"
    if callable(value) and isinstance(name, str) and "<locals>" in name:
        return f"the local function {name}"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


_LOAD_ADVICE = (
    "Pass the path fabric.save() wrote, or start without loading when there is none yet "
    "(if path.exists(): fabric.load(path, state))"
)


def missing_checkpoint(path: str | os.PathLike[str], advice: str = _LOAD_ADVICE) -> FileNotFoundError:
    """The error for loading ``path`` where nothing exists: what is there instead, then ``advice``."""
    path = Path(path)
    facts: list[str] = []
    interrupted = _interrupted_save(path)
    if interrupted:
        facts.append(interrupted)
    missing_parent = next((p for p in reversed(path.parents) if not p.exists()), None)
    if missing_parent is not None:
        facts.append(f"The directory '{missing_parent}' does not exist.")
    else:
        nearby = _checkpoints_in(path.parent)
        if nearby:
            facts.append(f"'{path.parent}' holds: {_first(nearby, quote=False)}.")
    if not path.is_absolute():
        facts.append(f"Relative paths start at the current directory, '{Path.cwd()}'.")
    facts.append(advice)
    return FileNotFoundError(errno.ENOENT, f"No checkpoint at '{path}'. {' '.join(facts)}")


def directory_error(path: str | os.PathLike[str]) -> IsADirectoryError:
    """The error for reading the directory ``path`` as a checkpoint file: what the directory is, what to pass.

    A directory of a known sharded format reaches this only in a strategy with a reader of
    its own that takes single files (fabric's first-party strategies read every format).
    """
    from fabric_core.io.detection import detect_format

    path = Path(path)
    found = detect_format(path)
    if found is not None:
        what = (
            f"a sharded ({found}) checkpoint directory, and this strategy reads single-file checkpoints. "
            "Load it with another strategy, or convert it into one file first: "
            f"`fabric checkpoint convert {path} {path}.pt --to full`"
        )
    elif not os.listdir(path):
        what = "an empty directory: neither a checkpoint file nor a sharded checkpoint. Pass the path fabric.save() wrote"
    else:
        what = (
            "a directory that holds no checkpoint fabric knows (no torch.distributed.checkpoint .metadata, no "
            "DeepSpeed model states). Pass a checkpoint file inside it, or the directory fabric.save() wrote"
        )
    return IsADirectoryError(f"'{path}' is {what}.")


def _interrupted_save(path: Path) -> str | None:
    from fabric_core.io.atomic import temporaries_of

    old = path.with_name(f".{path.name}.old")
    if old.exists():
        return (
            f"A save to it was killed while replacing it: the previous checkpoint is complete at '{old}'; "
            "rename it back to load it."
        )
    partial = [*temporaries_of(path), *[p for p in [path.with_name(f".{path.name}.partial")] if p.exists()]]
    if partial:
        return f"A save to it did not finish (it left '{partial[0].name}', which is not a checkpoint)."
    return None


def _checkpoints_in(directory: Path) -> list[str]:
    try:
        names = sorted(name for name in os.listdir(directory) if not name.startswith("."))
    except OSError:
        return []
    return names


def _first(names: list[str], count: int = 5, quote: bool = True) -> str:
    shown = [f"'{name}'" if quote else name for name in names[:count]]
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(shown) + more


def load_error(
    error: BaseException, path: str | os.PathLike[str], weights_only: bool
) -> BaseException | None:
    """The clear error for ``torch.load(path)`` failing with ``error``, or None if the file is fine.

    A file that is whole but holds objects ``weights_only`` loading refuses gets the advice
    to pass ``weights_only=False`` (only then: for a damaged file that advice is wrong and
    unsafe). A damaged file is described by `damage`.
    """
    path = Path(path)
    if weights_only and isinstance(error, pickle.UnpicklingError):
        unsafe = _unsafe_globals(path)
        if unsafe:
            return ValueError(
                f"The checkpoint '{path}' holds objects that safe loading (weights_only=True) refuses: "
                f"{_first(unsafe, quote=False)}. If you trust the file, load it with weights_only=False, or "
                f"allow only these types with torch.serialization.add_safe_globals([...])."
            )
    problem = damage(path)
    unreadable = isinstance(error, (pickle.UnpicklingError, EOFError)) or (
        isinstance(error, RuntimeError) and "magic number" in str(error)
    )
    if problem is None and unreadable:
        if not _starts_with(path, _ZIP_MAGIC):
            problem = "it is a pickle that torch.load cannot read: not written by torch.save, or damaged"
        else:
            problem = f"its pickled data cannot be read ({_first_line(error)})"
    if problem is None:
        return None
    return ValueError(
        f"Cannot load the checkpoint '{path}': {problem}. Pass the right file, load an earlier checkpoint, or "
        "save this one again."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unsafe_globals(path: Path) -> list[str]:
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a readable zip checkpoint: then it is damaged, not unsafe
        return []


def damage(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the bytes of the checkpoint file ``path``, or None if they look whole.

    Looks at the file only (no unpickling): empty, truncated (a zip archive without its
    directory, which is written last), a record failing its CRC check (reads every byte),
    or not a checkpoint at all.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): the save or copy that made it did not finish"
    with open(path, "rb") as file:
        head = file.read(16)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (
                f"the file is truncated ({format_bytes(size)}; its zip directory, written last, is missing): the save "
                "or copy that made it did not finish"
            )
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"the file is corrupted ({error})"
        return f"the file is corrupted (its record '{broken}' fails its CRC check)" if broken else None
    if head.startswith(b"\x80"):  # a pickle: torch's legacy format, or plain pickle.dump
        return None
    return f"it is not a torch checkpoint (it begins with {head!r})"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(magic)) == magic
    except OSError:
        return False
