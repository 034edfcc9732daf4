"""What the file loggers share: the ``save_dir/name/version_N`` folder, metric values, hyperparameters.

Glossary: ``save_dir`` is the folder the user gives; ``root_dir`` is ``save_dir/name``
(one experiment); ``log_dir`` is ``root_dir/version_N`` (one run). A new run without an
explicit ``version`` takes the next free ``N``, as Lightning's loggers do, so runs never
overwrite each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fabric_core.loggers.logger import Logger
from fabric_core.utilities.rank_zero import rank_zero_only

_VERSION_FOLDER = re.compile(r"version_(\d+)")


class FolderLogger(Logger):
    """A logger that writes into ``save_dir/name/version``; the version is chosen on first use.

    Args:
        owner: The subclass's name, for error messages.
        save_dir: The folder to write into (``root_dir`` is Lightning Fabric's name for it).
        name: The experiment's folder under ``save_dir``; ``""`` or ``None`` writes directly
            into ``save_dir``.
        version: An ``int`` writes into ``version_<int>``; a string is the folder's name;
            ``None`` takes the next free ``version_N``.
        prefix: Put before every metric name, joined with ``-``.
        root_dir: Lightning Fabric's name for ``save_dir``.
    """

    def __init__(
        self,
        owner: str,
        save_dir: str | Path | None,
        name: str | None,
        version: int | str | None,
        prefix: str,
        root_dir: str | Path | None,
    ) -> None:
        self._save_dir = folder_of(owner, save_dir, root_dir)
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise TypeError(
                f"{owner}(version={version!r}): the version is an int (folder version_<int>), a folder name, "
                "or None for the next free version_N."
            )
        self._name = name or ""
        self._version = version
        self._prefix = prefix

    @property
    def name(self) -> str:
        """The experiment's folder under `save_dir` (``""`` when writing directly into it)."""
        return self._name

    @property
    def save_dir(self) -> str:
        """The folder this logger was given."""
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: the folder holding this experiment's ``version_N`` folders."""
        return os.path.join(self._save_dir, self._name)

    @property
    def version(self) -> int | str:
        """This run's version: as given, or (on first access) one more than the highest existing."""
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def log_dir(self) -> str:
        """``save_dir/name/version_N``: the folder this run's files go into."""
        version = self.version
        folder = version if isinstance(version, str) else f"version_{version}"
        return os.path.join(self.root_dir, folder)

    def metric_values(self, metrics: Mapping[str, Any]) -> dict[str, int | float]:
        """``metrics`` as a flat dict of names (prefixed, nested names joined by ``/``) to numbers.

        Raises:
            ValueError: A value is not a number or a one-element tensor.
        """
        flat = flatten(metrics)
        owner = type(self).__name__
        return {self._prefixed(key): number(owner, key, value) for key, value in flat.items()}

    def _prefixed(self, key: str) -> str:
        return f"{self._prefix}-{key}" if self._prefix else key

    @rank_zero_only
    def write_hparams_file(self, params: Mapping[str, Any]) -> Path | None:
        """Write ``params`` to ``log_dir/hparams.yaml`` (``hparams.json`` without PyYAML); rank 0 only.

        Earlier calls' parameters are kept; a name given again takes the new value. Returns
        the file's path (``None`` on other ranks).
        """
        folder = Path(self.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yaml = yaml_module()
        path = folder / ("hparams.yaml" if yaml is not None else "hparams.json")
        merged: dict[str, Any] = {}
        if path.is_file():
            text = path.read_text()
            merged = dict((yaml.safe_load(text) if yaml is not None else json.loads(text)) or {})
        merged.update(plain(dict(params)))
        partial = path.with_name(path.name + ".partial")
        with partial.open("w") as file:
            if yaml is not None:
                yaml.safe_dump(merged, file, sort_keys=False)
            else:
                json.dump(merged, file, indent=2)
        os.replace(partial, path)
        return path


def yaml_module() -> Any:
    """The ``yaml`` module (PyYAML) when it is installed, else ``None``."""
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def folder_of(owner: str, save_dir: str | Path | None, root_dir: str | Path | None) -> str:
    """The folder given as ``save_dir=`` or as Lightning Fabric's ``root_dir=``.

    Raises:
        TypeError: Neither or both were given.
    """
    if save_dir is not None and root_dir is not None:
        raise TypeError(
            f"{owner}() got both save_dir={save_dir!r} and root_dir={root_dir!r}; they are two names for "
            "the same folder. Pass one."
        )
    folder = save_dir if save_dir is not None else root_dir
    if folder is None:
        raise TypeError(
            f"{owner}() needs the folder to write into: {owner}('logs') or {owner}(save_dir='logs')."
        )
    return os.fspath(folder)


def next_version(root_dir: str) -> int:
    """One more than the highest ``N`` of the ``version_N`` folders in ``root_dir`` (0 when none)."""
    try:
        entries = list(os.scandir(root_dir))
    except FileNotFoundError:
        return 0
    found = [
        int(match.group(1))
        for entry in entries
        if entry.is_dir() and (match := _VERSION_FOLDER.fullmatch(entry.name)) is not None
    ]
    return max(found) + 1 if found else 0


def flatten(values: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested mappings flattened to one level, their keys joined with ``/``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def number(owner: str, name: str, value: Any) -> int | float:
    """``value`` as a Python number: numbers pass, one-element tensors and NumPy scalars are unwrapped.

    Raises:
        ValueError: ``value`` is something else (a string, a tensor of several elements, ...).
    """
    if isinstance(value, (bool, int, float)):
        return value
    size = getattr(value, "numel", None) or getattr(value, "size", None)
    item = getattr(value, "item", None)
    count = size() if callable(size) else size
    if callable(item) and count == 1:
        result = item()
        if isinstance(result, (bool, int, float)):
            return result
    shape = getattr(value, "shape", None)
    described = f"a {type(value).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
    raise ValueError(
        f"{owner} logs numbers, but the metric {name!r} is {described}: {value!r:.80}. "
        f"Log a number instead, e.g. fabric.log({name!r}, value.mean())."
    )


def hyperparameters(owner: str, params: Any) -> dict[str, Any]:
    """``params`` (a mapping, an ``argparse.Namespace`` or a dataclass instance) as a dict.

    Raises:
        TypeError: ``params`` is none of these.
    """
    if params is None:
        return {}
    if isinstance(params, argparse.Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return {str(key): value for key, value in params.items()}
    raise TypeError(
        f"{owner}.log_hyperparams() expects a dict, an argparse.Namespace or a dataclass instance, "
        f"got {type(params).__name__}."
    )


def plain(value: Any) -> Any:
    """``value`` made of the types YAML and JSON write: dicts, lists, str, numbers, bool and None.

    Tensors and NumPy arrays become (lists of) numbers; paths, dtypes, devices and other
    objects their text. (No torch import here: a ``CSVLogger`` alone does not load torch.)
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if isinstance(value, argparse.Namespace):
        return plain(vars(value))
    tolist = getattr(value, "tolist", None)  # tensors, NumPy arrays and scalars
    if callable(tolist) and not isinstance(value, type):
        return plain(tolist())
    return str(value)
