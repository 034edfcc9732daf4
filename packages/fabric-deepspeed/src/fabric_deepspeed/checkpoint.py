"""DeepSpeed checkpoint directories: recognising them and consolidating them into one plain file.

``fabric.save(path, state)`` under DeepSpeed writes a directory: a ``latest`` file naming
the tag, and a tag directory holding the model states (``mp_rank_00_model_states.pt``, one
``zero_pp_rank_<r>_mp_rank_00_model_states.pt`` per rank under ZeRO 3: the model's layout
and fabric's entries) and one ``*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`` per rank
(that rank's partition of the float32 master weights and optimizer states).

Consolidation gathers the partitions into full float32 tensors with deepspeed's
``get_fp32_state_dict_from_zero_checkpoint``, on one process and without a process group;
the optimizer's per-parameter states (Adam's moments, ...) are reassembled the same way
(`fabric_deepspeed._interchange`). Importing this module does not import deepspeed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fabric_core.io.formats import CheckpointFormat, atomic_output
from fabric_deepspeed._engine_checkpoint import (
    MODEL_STATES,
    ZERO_STATES,
    locate_checkpoint,
    saved_optimizer_key,
    unpack_client_state,
)
from fabric_deepspeed._interchange import consolidate_optimizer_state

__all__ = ["DeepSpeedCheckpointFormat", "consolidate_checkpoint"]


def consolidate_checkpoint(path: str | os.PathLike[str], tag: str | None = None) -> dict[str, Any]:
    """Read a DeepSpeed checkpoint as one plain state, with full float32 weights and optimizer state.

    The result has the layout ``fabric.save`` gave it: the model's float32 state dict
    under the name the model was saved under (``"model"`` when the checkpoint does not
    record one), the optimizer's state under the name it was saved under, and the other
    entries of the saved state (``"step"``, a scheduler's state, ...). Pass the model's
    state dict to ``model.load_state_dict`` of the plain (not set-up) model.

    The optimizer state (ZeRO stages 1-3) is *name-keyed*, as
    ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` gives it:
    ``{"state": {name: {"step": ..., "exp_avg": ..., ...}}, "param_groups": [{"lr": ...,
    "params": [name, ...]}, ...]}``, with full float32 tensors shaped like the parameters;
    without ZeRO (stage 0) it is the optimizer's own ``state_dict()``. An optimizer state
    that cannot be converted is left out, with a warning saying why.

    The model-states file is read with ``torch.load(weights_only=False)``, as deepspeed
    itself reads it: consolidate only checkpoints you trust.

    Args:
        path: The directory given to ``fabric.save``, or one of its tag directories.
        tag: The tag to read; the one named in ``latest`` by default.

    Raises:
        FileNotFoundError: ``path`` is not a DeepSpeed checkpoint directory.

    Example::

        state = consolidate_checkpoint("checkpoints/step-1000")
        model.load_state_dict(state["model"])
    """
    checkpoint_dir, tag = locate_checkpoint(path, tag)
    tag_dir = checkpoint_dir / tag
    model_states_file = sorted(tag_dir.glob(MODEL_STATES))[0]
    model_states = torch.load(model_states_file, map_location="cpu", weights_only=False, mmap=True)
    module_key, entries = unpack_client_state(model_states)
    optimizer_key = saved_optimizer_key(model_states)
    optimizer: dict[str, Any] | None = None
    if any(tag_dir.glob(ZERO_STATES)):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state_dict = dict(get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag))
        if optimizer_key is not None:
            optimizer = consolidate_optimizer_state(tag_dir, order=list(model_states["module"]))
    else:  # ZeRO stage 0: the model states hold the full weights and the optimizer's own state
        state_dict = {
            name: value.float() if torch.is_floating_point(value) else value
            for name, value in model_states["module"].items()
        }
        saved = model_states.get("optimizer")
        if optimizer_key is not None and isinstance(saved, dict) and "param_groups" in saved:
            optimizer = saved
    optimizer_entry = (
        {optimizer_key: optimizer} if optimizer_key is not None and optimizer is not None else {}
    )
    return {module_key: state_dict, **optimizer_entry, **entries}


class DeepSpeedCheckpointFormat(CheckpointFormat):
    """The ``"deepspeed"`` format of ``fabric checkpoint consolidate``: a DeepSpeed checkpoint directory.

    The single file it writes holds what `consolidate_checkpoint` returns, so
    ``fabric.load(file, {"model": model, "optimizer": optimizer, ...})`` restores it under
    any strategy (Adam's moments included, where the strategy loads name-keyed optimizer
    states).
    """

    @staticmethod
    def detect(path: Path) -> bool:
        """A directory holding model-states files, itself or in a tag directory."""
        path = Path(path)
        return path.is_dir() and (any(path.glob(MODEL_STATES)) or any(path.glob(f"*/{MODEL_STATES}")))

    def consolidate(self, path: Path, output: Path) -> None:
        """Write the consolidated checkpoint at ``path`` to ``output`` (atomically)."""
        state = consolidate_checkpoint(path)
        with atomic_output(output) as temporary:
            torch.save(state, temporary)
