"""Turning a ``{name: object}`` state into a checkpoint dict and back.

Loading checks what it can before it changes anything: that each entry is the kind of state
its object takes (a model's state dict for a model, an optimizer's for an optimizer: names
swapped in the state are caught here), that a plain ``state_dict`` file is not mistaken for a
fabric checkpoint, and, for a module, that keys and shapes fit (`module_mismatch`).
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = [
    "StateDictMismatchError",
    "apply_checkpoint",
    "check_entries",
    "check_path_argument",
    "collect_state",
    "module_mismatch",
    "write_on_rank_zero",
]


class StateDictMismatchError(RuntimeError):
    """A state dict does not fit the module it is loaded into.

    Attributes:
        missing: Keys the module has and the state dict lacks.
        unexpected: Keys the state dict has and the module lacks.
        shapes: ``(key, shape in the state dict, shape in the module)`` of tensors that differ.
    """

    def __init__(
        self,
        message: str,
        missing: list[str],
        unexpected: list[str],
        shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.shapes = shapes


def module_mismatch(
    module: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, label: str = "The state dict"
) -> StateDictMismatchError | None:
    """The error for loading ``state_dict`` into ``module``, or None if it fits (checked before loading).

    Keys must match when ``strict``; shapes must always match, as ``load_state_dict``
    requires (lazy parameters take any shape). A module that changes what it loads (a
    submodule overriding ``_load_from_state_dict``, such as batch norm, or a load-state-dict
    hook, such as spectral norm's) cannot be judged beforehand: for it this returns None and
    ``load_state_dict`` decides (whose error `apply_checkpoint` rewords the same way).
    """
    if not _loads_as_it_saves(module):
        return None
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict] if strict else []
    unexpected = [key for key in state_dict if key not in expected] if strict else []
    shapes = []
    for key, value in state_dict.items():
        target = expected.get(key)
        if not isinstance(value, torch.Tensor) or not isinstance(target, torch.Tensor):
            continue
        if nn.parameter.is_lazy(target) or (target.dim() == 0 and tuple(value.shape) == (1,)):
            continue  # load_state_dict accepts these
        if value.shape != target.shape:
            shapes.append((key, tuple(value.shape), tuple(target.shape)))
    if not (missing or unexpected or shapes):
        return None
    return _mismatch(label, module, missing, unexpected, shapes, strict)


def _loads_as_it_saves(module: nn.Module) -> bool:
    """Whether ``load_state_dict`` expects exactly the keys ``state_dict`` gives (no overrides, no hooks)."""
    for submodule in module.modules():
        if type(submodule)._load_from_state_dict is not nn.Module._load_from_state_dict:
            return False
        if submodule._load_state_dict_pre_hooks or submodule._load_state_dict_post_hooks:
            return False
    return True


def _mismatch(
    label: str,
    module: nn.Module,
    missing: list[str],
    unexpected: list[str],
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    strict: bool,
) -> StateDictMismatchError:
    inner = getattr(module, "module", None)  # DistributedDataParallel, DataParallel, engines
    name = type(inner if isinstance(inner, nn.Module) else module).__name__
    lines = [f"{label} does not fit the model ({name}):"]
    if missing:
        lines.append(f"  Missing key(s) (in the model, not in the checkpoint): {_keys(missing)}")
    if unexpected:
        lines.append(f"  Unexpected key(s) (in the checkpoint, not in the model): {_keys(unexpected)}")
    for key, saved, current in shapes[:5]:
        lines.append(
            f'  Shape mismatch: "{key}" is {list(saved)} in the checkpoint but {list(current)} in the model'
        )
    if len(shapes) > 5:
        lines.append(f"  ... and {len(shapes) - 5} more shape mismatches")
    if shapes:
        lines.append(
            "Shapes must match whatever strict is: build the model with the configuration it was saved with."
        )
    if strict and (missing or unexpected) and not shapes:
        lines.append("If the model changed on purpose, pass strict=False to load the keys that match.")
    return StateDictMismatchError("\n".join(lines), missing, unexpected, shapes)


def _keys(keys: list[str], count: int = 5) -> str:
    shown = ", ".join(f'"{key}"' for key in keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


_TORCH_KEYS = re.compile(r"^\s*(Missing|Unexpected) key\(s\) in state_dict: (.*)$")
_TORCH_SHAPE = re.compile(
    r"size mismatch for (.+?): copying a param with shape torch\.Size\(\[(.*?)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[(.*?)\]\)"
)


def _parse_torch_mismatch(
    error: RuntimeError,
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]] | None:
    """The keys and shapes in ``load_state_dict``'s own error message, or None if it is another error."""
    text = str(error)
    if not text.startswith("Error(s) in loading state_dict"):
        return None
    found: dict[str, list[str]] = {"Missing": [], "Unexpected": []}
    shapes = []
    for line in text.splitlines():
        keys = _TORCH_KEYS.match(line)
        if keys:
            found[keys.group(1)] = re.findall(r'"([^"]*)"', keys.group(2))
        for key, saved, current in _TORCH_SHAPE.findall(line):
            shapes.append((key, _shape(saved), _shape(current)))
    if not (found["Missing"] or found["Unexpected"] or shapes):
        return None
    return found["Missing"], found["Unexpected"], shapes


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def check_path_argument(method: str, path: Any, other: Any) -> None:
    """Raise unless ``path`` is a path (``str`` or ``os.PathLike``), saying so when the arguments are swapped.

    Args:
        method: The ``Fabric`` method called (``"save"``, ``"load"``, ``"load_raw"``).
        path: Its first argument.
        other: Its second argument (the state, or the object to load into).
    """
    if isinstance(path, (str, os.PathLike)):
        return
    second = "state" if method != "load_raw" else "model"
    if isinstance(other, (str, os.PathLike)):
        raise TypeError(
            f"fabric.{method}() takes the path first, then the {second}: you passed a {type(path).__name__} as "
            f"the path and {os.fspath(other)!r} as the {second}. Write fabric.{method}({os.fspath(other)!r}, "
            f"{second})."
        )
    raise TypeError(
        f"fabric.{method}(path, {second}) needs a path (a str or pathlib.Path) as its first argument, got "
        f"{type(path).__name__}: {path!r:.60}."
    )


def write_on_rank_zero(strategy: Strategy, write: Callable[[], None]) -> None:
    """Call ``write`` on global rank 0; if it fails, raise on every process, not on rank 0 alone.

    Every process must call this. Rank 0 raises the original error; the others raise one of
    the same built-in type (``RuntimeError`` for other types) saying what rank 0 reported,
    instead of waiting at the next collective for a rank that has failed.
    """
    failure: tuple[str, str] | None = None
    error: BaseException | None = None
    if strategy.is_global_zero:
        try:
            write()
        except Exception as caught:
            error = caught
            failure = (type(caught).__name__, str(caught))
    failure = strategy.broadcast(failure)
    if error is not None:
        raise error
    if failure is not None:
        name, message = failure
        kind = getattr(builtins, name, None)
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = RuntimeError
        raise kind(f"Global rank 0 could not save the checkpoint: {message}")


def collect_state(
    state: dict[str, Any],
    strategy: Strategy | None = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
    *,
    module_state: Callable[[nn.Module], dict[str, Any]] | None = None,
    optimizer_state: Callable[[Optimizer], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Replace each module, optimizer and stateful object in ``state`` by its state dict.

    Modules and optimizers go through ``module_state``/``optimizer_state`` when given (a
    sharded strategy gathers or names its shards there), else through the strategy's
    ``get_module_state_dict``/``get_optimizer_state``.

    Raises:
        TypeError: ``state`` is not a dict, or ``filter`` names an entry that has no state dict.
    """
    if module_state is None or optimizer_state is None:
        assert strategy is not None, "collect_state needs a strategy or both state getters"
        module_state = module_state or strategy.get_module_state_dict
        optimizer_state = optimizer_state or strategy.get_optimizer_state
    if not isinstance(state, dict):
        raise TypeError(
            f"The state to save must be a dict of names to objects, got {type(state).__name__}. "
            "Example: fabric.save(path, {'model': model, 'optimizer': optimizer, 'step': step})."
        )
    checkpoint: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            value = module_state(obj)
        elif isinstance(obj, Optimizer):
            value = optimizer_state(obj)
        elif callable(getattr(obj, "state_dict", None)):
            value = obj.state_dict()
        else:
            value = obj
        if filter is not None and key in filter:
            if not isinstance(value, dict):
                raise TypeError(
                    f"filter['{key}'] was given, but state['{key}'] is not a dict or a state dict."
                )
            keep = filter[key]
            value = {name: entry for name, entry in value.items() if keep(name, entry)}
        checkpoint[key] = value
    return checkpoint


def apply_checkpoint(
    state: dict[str, Any] | nn.Module | Optimizer | None,
    checkpoint: dict[str, Any],
    strategy: Strategy | None = None,
    strict: bool = True,
    *,
    path: str | os.PathLike[str] | None = None,
    load_module: Callable[[nn.Module, Any, bool], None] | None = None,
    load_optimizer: Callable[[Optimizer, Any], None] | None = None,
) -> dict[str, Any]:
    """Restore the objects in ``state`` from ``checkpoint`` in place: the inverse of `collect_state`.

    Modules and optimizers load their entry through ``load_module(module, value, strict)``
    / ``load_optimizer(optimizer, value)`` when given (a sharded strategy scatters or
    reshards there), else through the strategy's ``load_module_state_dict`` /
    ``load_optimizer_state``. Other objects with ``load_state_dict`` load their entry; any
    other entry replaces the value in ``state``.

    Args:
        state: Names mapped to the objects to restore; or one module or optimizer, for which
            the whole checkpoint is its state dict; or ``None``, which restores nothing.
        checkpoint: The loaded checkpoint.
        strategy: Gives the loaders not passed as hooks.
        strict: Require every name in ``state`` to be in the checkpoint (see
            `check_entries`); passed on to ``load_module``.
        path: Where the checkpoint was read from, named in the error.
        load_module: Loads a module's entry, with ``strict``.
        load_optimizer: Loads an optimizer's entry.

    Returns:
        The checkpoint entries that ``state`` did not ask for (all of them for ``state=None``,
        none for a single module or optimizer).

    Raises:
        KeyError: ``strict`` is true and ``state`` names an entry the checkpoint lacks.
        ValueError: The checkpoint is a plain state dict (use ``fabric.load_raw``).
        TypeError: An entry is not the kind of state its object takes (names swapped, or a
            fabric checkpoint given where a plain state dict belongs).
        StateDictMismatchError: A module's keys or shapes do not fit.
    """
    if state is None:
        return checkpoint
    if load_module is None or load_optimizer is None:
        assert strategy is not None, "apply_checkpoint needs a strategy or both state loaders"
        load_module = load_module or strategy.load_module_state_dict
        load_optimizer = load_optimizer or strategy.load_optimizer_state
    single = not isinstance(state, dict)
    if isinstance(state, dict):
        named, entries = state, checkpoint
        _refuse_plain_state_dict(named, checkpoint, path)
    else:  # one module or optimizer: the whole checkpoint is its state dict
        named, entries = {"_": state}, {"_": checkpoint}
    check_entries(named, entries, strict, path)
    for key, obj in named.items():  # every entry before any is loaded
        if key in entries:
            _check_kind(key, obj, entries, path, single)
    remaining = dict(entries)
    for key, obj in named.items():
        if key not in remaining:
            continue
        value = remaining.pop(key)
        if isinstance(obj, nn.Module):
            _load_module(load_module, obj, value, strict, _label(key, path, single))
        elif isinstance(obj, Optimizer):
            load_optimizer(obj, value)
        elif callable(getattr(obj, "load_state_dict", None)):
            obj.load_state_dict(value)
        else:
            named[key] = value
    return remaining if named is state else {}


def _label(key: str, path: str | os.PathLike[str] | None, single: bool) -> str:
    where = f" '{os.fspath(path)}'" if path is not None else ""
    return (
        f"The state dict in{where or ' the file'}"
        if single
        else f"The entry '{key}' of the checkpoint{where}"
    )


def _load_module(
    load_module: Callable[[nn.Module, Any, bool], None],
    module: nn.Module,
    value: Any,
    strict: bool,
    label: str,
) -> None:
    try:
        load_module(module, value, strict)
    except RuntimeError as error:
        if isinstance(error, StateDictMismatchError):
            found = (error.missing, error.unexpected, error.shapes)
        else:
            parsed = _parse_torch_mismatch(error)
            if parsed is None:
                raise
            found = parsed
        raise _mismatch(label, module, *found, strict) from error


def _kind(value: Any) -> str:
    """``"optimizer"``, ``"module"`` (tensors by name), ``"checkpoint"`` (state dicts by name) or ``"other"``."""
    if not isinstance(value, Mapping) or not value:
        return "other"
    if "state" in value and "param_groups" in value:
        return "optimizer"
    if all(
        isinstance(entry, torch.Tensor)
        for key, entry in value.items()
        if not str(key).endswith("_extra_state")
    ):
        return "module"
    if any(_kind(entry) in ("module", "optimizer") for entry in value.values()):
        return "checkpoint"
    return "other"


def _first_keys(value: Mapping[str, Any], count: int = 3) -> str:
    keys = [repr(key) for key in list(value)[:count]]
    return ", ".join(keys) + (", ..." if len(value) > count else "")


def _refuse_plain_state_dict(
    state: dict[str, Any], checkpoint: dict[str, Any], path: str | os.PathLike[str] | None
) -> None:
    """Raise when ``checkpoint`` is one object's plain state dict, not a fabric checkpoint of named entries."""
    kind = _kind(checkpoint)
    if kind not in ("module", "optimizer") or any(key in checkpoint for key in state):
        return
    what = "a model's" if kind == "module" else "an optimizer's"
    target = next(
        (key for key, obj in state.items() if isinstance(obj, nn.Module if kind == "module" else Optimizer)),
        "model" if kind == "module" else "optimizer",
    )
    where = f"'{os.fspath(path)}'" if path is not None else "The checkpoint"
    raise ValueError(
        f"{where} is {what} plain state dict (its keys are {_first_keys(checkpoint)}), as torch.save(obj.state_dict()) "
        f"writes, not a checkpoint of named entries from fabric.save. Load it with fabric.load_raw(path, "
        f"{target}); strict=False would load nothing."
    )


def _check_kind(
    key: str, obj: Any, entries: dict[str, Any], path: str | os.PathLike[str] | None, single: bool
) -> None:
    """Raise when ``entries[key]`` is not the kind of state ``obj`` takes, naming what it is."""
    value = entries[key]
    kind = _kind(value)
    label = _label(key, path, single)
    if isinstance(obj, nn.Module):
        wanted, wrong = "a model's state dict", kind == "optimizer" or not isinstance(value, Mapping)
    elif isinstance(obj, Optimizer):
        wanted, wrong = "an optimizer's state dict", kind == "module"
    else:
        return
    if single and kind == "checkpoint":
        raise TypeError(
            f"{label} is a checkpoint of named entries ({_first_keys(value)}) from fabric.save, not a plain state "
            f"dict. Load it with fabric.load(path, {{{_suggested_state(value)}}}) using the names it was saved with."
        )
    if not wrong:
        return
    what = f"{'a model' if isinstance(obj, nn.Module) else 'an optimizer'} ({type(obj).__name__})"
    message = f"state['{key}'] is {what}, which takes {wanted}, but {label[0].lower()}{label[1:]} is {_kind_words(value)}."
    if not single:
        holds = ", ".join(f"'{name}' ({_kind_words(entry)})" for name, entry in entries.items())
        message += f" Are the names swapped? Give each object the name it was saved under; the checkpoint holds: {holds}."
    raise TypeError(message)


def _kind_words(value: Any) -> str:
    return {"optimizer": "an optimizer's state dict", "module": "a model's state dict"}.get(
        _kind(value), type(value).__name__
    )


def _suggested_state(checkpoint: Mapping[str, Any]) -> str:
    """``'model': model, 'optimizer': optimizer, ...`` for the entries of a fabric checkpoint."""
    words = {"module": "model", "optimizer": "optimizer"}
    named = [f"{key!r}: {words[_kind(value)]}" for key, value in checkpoint.items() if _kind(value) in words]
    return ", ".join([*named, "..."])


def check_entries(
    state: Iterable[str], saved: Iterable[str], strict: bool, path: str | os.PathLike[str] | None = None
) -> None:
    """Raise when ``strict`` and ``state`` names entries that the checkpoint does not hold.

    Args:
        state: The names to restore.
        saved: The names the checkpoint holds (its top-level keys).
        strict: Whether a missing name is an error.
        path: Where the checkpoint was read from, named in the error.

    Raises:
        KeyError: Naming the missing entries and those the checkpoint holds.
    """
    if not strict:
        return
    saved = list(saved)
    missing = [key for key in state if key not in saved]
    if missing:
        where = f" '{os.fspath(path)}'" if path is not None else ""
        raise KeyError(
            f"The checkpoint{where} has no entry {', '.join(map(repr, missing))} (it holds: "
            f"{', '.join(map(repr, saved)) or 'nothing'}). Pass strict=False to load the entries that exist."
        )
