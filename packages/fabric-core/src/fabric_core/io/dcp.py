"""Sharded checkpoints as ``torch.distributed.checkpoint`` (DCP) directories, under any strategy.

Every process writes the shards it holds and reads the slices of the shards it needs, so a
directory written by N processes loads at any other number; DCP's planner does the
resharding from the metadata rank 0 writes. Entries that are not modules or optimizers are
read whole into every process. Models and optimizers go through
``torch.distributed.checkpoint.state_dict``, which treats a plain, a DDP and an FSDP2
(DTensor) module alike: a directory written by ``fsdp`` loads under ``ddp`` or on one
device, and one written there loads under ``fsdp``.
"""

from __future__ import annotations

import atexit
import io
import itertools
import pickle
import shutil
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.optim import Optimizer

from fabric_core.io.atomic import partial_directory, replace_path
from fabric_core.io.diagnose import check_save_target, make_parent
from fabric_core.io.manifest import write_manifest
from fabric_core.io.optimizer_state import Filter, ModuleFinder, apply_state, collect_state
from fabric_core.utilities.checkpoint import check_entries, write_on_rank_zero

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["AsyncSaver", "is_dcp_checkpoint", "load_sharded", "save_sharded"]


def is_dcp_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a ``torch.distributed.checkpoint`` directory."""
    return path.is_dir() and (path / ".metadata").is_file()


def save_sharded(
    strategy: Strategy,
    path: str | Path,
    state: dict[str, Any],
    filter: Filter | None,
    module_for: ModuleFinder,
) -> None:
    """Write ``state`` as a DCP directory at ``path``; every process writes its own shards.

    The directory is written next to ``path`` as ``.<name>.partial`` and put at ``path`` by
    rank 0 once complete (swapped in one step where the file system can, see
    `fabric_core.io.atomic.replace_path`), so a failure or a kill mid-write leaves any
    previous checkpoint at ``path`` as it was; DCP writes ``.metadata`` last, and only into
    the partial directory. The next save to ``path`` removes what a killed save left. Rank 0
    adds the manifest (`fabric_core.io.manifest`) before the directory takes its name.
    """
    checkpoint, path, partial = _prepare(strategy, path, state, filter, module_for)
    dcp.save(checkpoint, storage_writer=FileSystemWriter(partial))
    write_on_rank_zero(strategy, lambda: _finish(strategy, partial, path))


def _prepare(
    strategy: Strategy,
    path: str | Path,
    state: dict[str, Any],
    filter: Filter | None,
    module_for: ModuleFinder,
) -> tuple[dict[str, Any], Path, Path]:
    """The state dicts to write, the target and its partial directory, made ready on rank 0."""
    checkpoint = collect_state(
        state,
        filter,
        module_state=get_model_state_dict,
        optimizer_state=get_optimizer_state_dict,
        module_for=module_for,
    )
    path = Path(path)
    partial = partial_directory(path)

    def prepare() -> None:  # what a killed save left under the partial name goes first
        check_save_target(path, directory=True)
        make_parent(path)
        _remove(partial)

    # Rank 0 prepares (and later renames); the broadcast in write_on_rank_zero orders the
    # other processes after it, and makes every process raise when rank 0 cannot.
    write_on_rank_zero(strategy, prepare)
    return checkpoint, path, partial


def _finish(strategy: Strategy, partial: Path, path: Path) -> None:
    """On rank 0, once every shard and ``.metadata`` are written: the manifest, then the final name."""
    write_manifest(partial, strategy, "dcp")
    replace_path(partial, path)


class AsyncSaver:
    """Sharded saves written in the background (DCP's ``async_save``), one at a time.

    `save` returns once this process's shards are copied into CPU memory (DCP's
    staging); a thread writes them while training goes on. When every process has written
    and rank 0 has written ``.metadata``, rank 0 gives the directory its name, as a
    blocking save does: until then the previous checkpoint at the path is untouched, so a
    crash mid-write leaves the last complete checkpoint loadable. The next `save`,
    `wait` (which ``fabric.load`` and the strategy's teardown call) and the end of
    the process wait for the save in flight; a failure in the background is raised there,
    on every process that saw it.

    The writing thread's collectives go through a process group of their own (gloo), so
    they never interleave with the training's collectives.
    """

    def __init__(self) -> None:
        self._pending: _PendingSave | None = None
        self._group: Any = None
        self._exit_hook = False

    # The parameters of save_sharded, by design: the strategy calls one or the other.
    def save(
        self,
        strategy: Strategy,
        path: str | Path,
        state: dict[str, Any],
        filter: Filter | None,
        module_for: ModuleFinder,
    ) -> None:
        """Start writing ``state`` at ``path`` (every process calls it), after the save in flight is done."""
        self.wait()
        checkpoint, target, partial = _prepare(strategy, path, state, filter, module_for)
        future = dcp.async_save(
            checkpoint, storage_writer=FileSystemWriter(partial), process_group=self._checkpoint_group()
        )
        assert isinstance(future, Future), "without an async_stager, async_save returns a Future"
        pending = _PendingSave(target, future)
        if strategy.is_global_zero:
            future.add_done_callback(
                lambda done: pending.finish(done, lambda: _finish(strategy, partial, target))
            )
        else:
            pending.finished.set()
        self._pending = pending
        if not self._exit_hook:
            atexit.register(self.wait)  # registered after the process group's own exit hook: runs before it
            self._exit_hook = True

    def wait(self) -> None:
        """Block until the save in flight (if any) is written and named; raise what went wrong with it.

        Raises:
            RuntimeError: The background save failed (the cause is chained); the previous
                checkpoint at its path is intact.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _checkpoint_group(self) -> Any:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return None
        if self._group is None:
            self._group = dist.new_group(backend="gloo")  # collective: every process creates it together
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with its strategy for spawned processes: nothing in flight travels.
        return {"_pending": None, "_group": None, "_exit_hook": False}


class _PendingSave:
    """One background save: DCP's future, and on rank 0 the renaming that follows it."""

    def __init__(self, path: Path, future: Any) -> None:
        self.path = path
        self.future = future
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def finish(self, future: Any, rename: Callable[[], None]) -> None:
        try:
            if future.exception() is None:
                rename()
        except BaseException as error:  # raised to the user by result()
            self.error = error
        finally:
            self.finished.set()

    def result(self) -> None:
        try:
            self.future.result()
        except Exception as error:
            raise RuntimeError(
                f"The asynchronous save to '{self.path}' failed: {error}. The previous checkpoint there, if any, is "
                "intact; fix the cause and save again."
            ) from error
        self.finished.wait()
        if self.error is not None:
            raise RuntimeError(
                f"The asynchronous save to '{self.path}' was written but could not be put in place: {self.error}. "
                "The previous checkpoint there, if any, is intact."
            ) from self.error


class _CheckedLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, except that pickled (non-tensor) entries must pass ``weights_only`` loading.

    Refused entries are left out and listed in `refused`; `_load` raises for them
    once DCP is done (an error raised inside DCP would reach the caller wrapped and logged).
    """

    def __init__(self, weights_only: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._weights_only = weights_only
        self.refused: list[str] = []

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        if self._weights_only:
            try:
                torch.load(value, weights_only=True)
            except pickle.UnpicklingError:
                self.refused.append(read_item.dest_index.fqn)
                return
            value.seek(0)
        super().load_bytes(read_item, value)


def _load(
    state_dict: dict[str, Any], path: Path, planner: _CheckedLoadPlanner, no_dist: bool = False
) -> None:
    """``dcp.load`` through ``planner``, then refuse what safe loading refused."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # no_dist is intended
        dcp.load(state_dict, checkpoint_id=path, planner=planner, no_dist=no_dist)
    if planner.refused:
        raise ValueError(
            f"The checkpoint '{path}' holds pickled objects that safe loading (weights_only=True) refuses, in "
            f"{', '.join(map(repr, planner.refused))}. If you trust the checkpoint, load it with weights_only=False."
        )


def load_sharded(
    path: Path,
    state: dict[str, Any] | nn.Module | Optimizer | None,
    strict: bool,
    weights_only: bool,
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Restore ``state`` from a DCP directory, each process reading the slices of its own shards.

    Entries the state does not name (all of them for ``state=None``) are read whole and returned.
    """
    metadata = FileSystemReader(path).read_metadata()
    paths = _entry_paths(metadata)
    saved = list(dict.fromkeys(entry_path[0] for entry_path in paths.values()))
    if state is None:
        return _load_entries(path, metadata, paths, saved, weights_only)
    if isinstance(state, Optimizer):
        raise TypeError(
            "A sharded checkpoint stores optimizer state by parameter names, so it needs the model: "
            "fabric.load(path, {'model': model, 'optimizer': optimizer})."
        )
    if isinstance(state, nn.Module):  # a DCP directory of one module's state dict
        target = get_model_state_dict(state)
        _load(target, path, _CheckedLoadPlanner(weights_only, allow_partial_load=not strict))
        _set_module(state, target, strict)
        return {}
    check_entries(state, saved, strict, path)  # before any reading
    # DCP reads shards in place into the state dicts that saving these objects would write.
    sharded = {
        key: obj for key, obj in state.items() if key in saved and isinstance(obj, (nn.Module, Optimizer))
    }
    targets = collect_state(
        sharded, None, get_model_state_dict, get_optimizer_state_dict, lambda o, _: module_for(o, state)
    )
    if targets:
        _load(targets, path, _CheckedLoadPlanner(weights_only, allow_partial_load=not strict))
    entries = _load_entries(path, metadata, paths, [k for k in saved if k not in targets], weights_only)
    return apply_state(
        state, {**targets, **entries}, strict, path, _set_module, set_optimizer_state_dict, module_for
    )


def _set_module(module: nn.Module, state_dict: dict[str, Any], strict: bool) -> None:
    set_model_state_dict(module, state_dict, options=StateDictOptions(strict=strict))


def _entry_paths(metadata: Metadata) -> dict[str, tuple[Any, ...]]:
    planner_data = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    return {fqn: tuple(planner_data.get(fqn, (fqn,))) for fqn in metadata.state_dict_metadata}


def _load_entries(
    path: Path, metadata: Metadata, paths: dict[str, tuple[Any, ...]], keys: list[str], weights_only: bool
) -> dict[str, Any]:
    """Read whole top-level entries, with full tensors, into this process (no communication)."""
    wanted = set(keys)
    flat: dict[str, Any] = {}
    for fqn, storage in metadata.state_dict_metadata.items():
        if paths[fqn][0] not in wanted:
            continue
        if isinstance(storage, TensorStorageMetadata):
            flat[fqn] = torch.empty(storage.size, dtype=storage.properties.dtype)
        else:
            flat[fqn] = None  # a pickled object: DCP fills it in
    if not flat:
        return {}
    planner = _CheckedLoadPlanner(weights_only, flatten_state_dict=False, flatten_sharded_tensors=False)
    _load(flat, path, planner, no_dist=True)
    nested: dict[str, Any] = {}
    for fqn, value in flat.items():
        _set_path(nested, paths[fqn], value)
    return nested


def _set_path(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = root
    for key, following in itertools.pairwise(path):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(node, list):
            node.extend([None] * (key + 1 - len(node)))
            if node[key] is None:
                node[key] = empty
        elif key not in node:
            node[key] = empty
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        node.extend([None] * (last + 1 - len(node)))
    node[last] = value


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
