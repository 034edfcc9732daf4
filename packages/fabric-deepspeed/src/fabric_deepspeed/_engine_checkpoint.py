"""Engine checkpoints: splitting a ``fabric.save`` state, writing and reading the directory, its layout.

A DeepSpeed checkpoint is a directory the engine writes (``engine.save_checkpoint``); the
entries that are not the model or its optimizer travel in the engine's *client state*,
under the key `CLIENT_STATE_KEY`, with the names the model and optimizer were saved
under, so a consolidated file can use the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CHECKPOINT_TAG",
    "CLIENT_STATE_KEY",
    "DEFAULT_MODULE_KEY",
    "DEFAULT_OPTIMIZER_KEY",
    "MODEL_STATES",
    "ZERO_STATES",
    "SplitState",
    "load_engine_checkpoint",
    "locate_checkpoint",
    "pack_client_state",
    "save_engine_checkpoint",
    "saved_layout",
    "saved_optimizer_key",
    "split_state",
    "unpack_client_state",
]

CHECKPOINT_TAG: Final = "checkpoint"
"""The tag directory ``fabric.save`` writes inside a DeepSpeed checkpoint directory."""

MODEL_STATES: Final = "*mp_rank_*_model_states.pt"
"""The file pattern of a tag directory's model states (one per rank under ZeRO 3)."""

ZERO_STATES: Final = "*zero_pp_rank_*_optim_states.pt"
"""The file pattern of the per-rank ZeRO partitions (``bf16_`` prefixed in bfloat16 runs)."""

CLIENT_STATE_KEY: Final = "fabric"
"""The key of fabric's entries in a DeepSpeed checkpoint's client state."""

DEFAULT_MODULE_KEY: Final = "model"
"""The name of the weights in a consolidated file when the checkpoint does not record one."""

DEFAULT_OPTIMIZER_KEY: Final = "optimizer"
"""The name of the optimizer state in a consolidated file when the checkpoint does not record one."""


@dataclass(frozen=True)
class SplitState:
    """A state dict of ``fabric.save`` / ``fabric.load`` taken apart.

    Attributes:
        engine: The DeepSpeed engine (the set-up model).
        module_key: The name of the model in the state.
        optimizer_key: The name of the engine's optimizer in the state, if it is there.
        rest: Every other entry.
    """

    engine: Any
    module_key: str
    optimizer_key: str | None
    rest: dict[str, Any]


def split_state(state: Mapping[str, Any], engines: Sequence[tuple[Any, Sequence[Any]]]) -> SplitState:
    """Find the one DeepSpeed model of ``state`` and its optimizer.

    Args:
        state: What ``fabric.save`` / ``fabric.load`` got (unwrapped).
        engines: Each set-up engine with the objects that stand for its optimizer (the
            optimizer ``fabric.setup`` returned, DeepSpeed's, the one passed in).

    Raises:
        ValueError: The state holds no model set up by this strategy, or several.
    """
    found = [
        (key, value, aliases)
        for key, value in state.items()
        for engine, aliases in engines
        if value is engine
    ]
    if not found:
        raise ValueError(
            "A DeepSpeed checkpoint is written and read by the engine of a model set up with fabric.setup(), and "
            "this state holds none. Include the model: fabric.save(path, {'model': model, 'optimizer': optimizer, "
            "...})."
        )
    if len(found) > 1:
        names = ", ".join(repr(key) for key, _, _ in found)
        raise ValueError(
            f"The state holds {len(found)} DeepSpeed models ({names}), but a DeepSpeed checkpoint directory holds "
            "one engine. Save each model (with its optimizer) to its own path."
        )
    module_key, engine, aliases = found[0]
    optimizer_keys = [key for key, value in state.items() if any(value is alias for alias in aliases)]
    rest = {key: value for key, value in state.items() if key != module_key and key not in optimizer_keys}
    return SplitState(engine, module_key, optimizer_keys[0] if optimizer_keys else None, rest)


def pack_client_state(split: SplitState, entries: dict[str, Any]) -> dict[str, Any]:
    """The client state to hand to ``engine.save_checkpoint``: the entries and the names used."""
    return {
        CLIENT_STATE_KEY: {"module": split.module_key, "optimizer": split.optimizer_key, "entries": entries}
    }


def unpack_client_state(client_state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model's name and the user's entries from a checkpoint's client state.

    A checkpoint written by DeepSpeed without fabric has no entries; its model is called
    `DEFAULT_MODULE_KEY`.
    """
    packed = client_state.get(CLIENT_STATE_KEY)
    if not isinstance(packed, Mapping):
        return DEFAULT_MODULE_KEY, {}
    return str(packed.get("module") or DEFAULT_MODULE_KEY), dict(packed.get("entries") or {})


def saved_optimizer_key(client_state: Mapping[str, Any]) -> str | None:
    """The name the optimizer was saved under, from a checkpoint's client state.

    ``None`` when ``fabric.save`` got no optimizer; `DEFAULT_OPTIMIZER_KEY` for a
    checkpoint written by DeepSpeed without fabric.
    """
    packed = client_state.get(CLIENT_STATE_KEY)
    if not isinstance(packed, Mapping):
        return DEFAULT_OPTIMIZER_KEY
    key = packed.get("optimizer")
    return str(key) if key is not None else None


def save_engine_checkpoint(split: SplitState, path: str, entries: dict[str, Any]) -> None:
    """Write the engine's partitions and the user's ``entries`` to the directory ``path`` (all ranks call)."""
    split.engine.save_checkpoint(path, tag=CHECKPOINT_TAG, client_state=pack_client_state(split, entries))


def load_engine_checkpoint(split: SplitState, path: str | os.PathLike[str], strict: bool) -> dict[str, Any]:
    """Restore the engine, and its optimizer when the state names it, from ``path``; return the user's entries.

    Raises:
        FileNotFoundError: ``path`` holds no DeepSpeed checkpoint.
        RuntimeError: DeepSpeed could not read it.
    """
    checkpoint_dir, tag = locate_checkpoint(path)
    loaded, client_state = split.engine.load_checkpoint(
        str(checkpoint_dir),
        tag=tag,
        load_module_strict=strict,
        load_optimizer_states=split.optimizer_key is not None,
        load_lr_scheduler_states=False,
    )
    if loaded is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint '{path}' (tag '{tag}').")
    return unpack_client_state(client_state or {})[1]


def saved_layout(path: str | os.PathLike[str]) -> tuple[int | None, int]:
    """The number of data-parallel processes and the ZeRO stage the checkpoint at ``path`` was written with.

    Raises:
        FileNotFoundError: ``path`` holds no DeepSpeed checkpoint.
    """
    import torch

    from fabric_deepspeed._config import zero_stage

    checkpoint_dir, tag = locate_checkpoint(path)
    first = sorted((checkpoint_dir / tag).glob(MODEL_STATES))[0]
    states = torch.load(first, map_location="cpu", weights_only=False, mmap=True)
    world_size = states.get("dp_world_size")
    config = states.get("ds_config")
    return (int(world_size) if world_size is not None else None), zero_stage(
        config if isinstance(config, Mapping) else {}
    )


def locate_checkpoint(path: str | os.PathLike[str], tag: str | None = None) -> tuple[Path, str]:
    """The checkpoint directory and the tag to read, for a checkpoint directory or one of its tag directories.

    Raises:
        FileNotFoundError: ``path`` holds no DeepSpeed checkpoint.
    """
    path = Path(path)
    if any(path.glob(MODEL_STATES)):
        return path.parent, path.name
    if tag is None:
        latest = path / "latest"
        if latest.is_file():
            tag = latest.read_text().strip()
        else:
            tags = sorted({found.parent.name for found in path.glob(f"*/{MODEL_STATES}")})
            tag = tags[0] if len(tags) == 1 else None
    if tag is None or not any((path / tag).glob(MODEL_STATES)):
        raise FileNotFoundError(
            f"'{path}' is not a DeepSpeed checkpoint: no {MODEL_STATES} file"
            + (f" in its tag directory '{tag}'." if tag else ", and no 'latest' file naming a tag.")
            + " Pass the directory given to fabric.save."
        )
    return path, tag
