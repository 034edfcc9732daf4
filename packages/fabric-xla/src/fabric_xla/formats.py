"""``fabric checkpoint consolidate`` for the per-rank folders that ``xla_fsdp`` writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fabric_core.io.formats import CheckpointFormat, atomic_output
from fabric_xla._fsdp_state import META_KEY, SHARD_FILE_PATTERN, consolidate_shards, shard_file

__all__ = ["XLAFSDPFormat"]

_RANK_FILE = re.compile(r"checkpoint_rank-(\d+)-of-(\d+)\.pt$")


class XLAFSDPFormat(CheckpointFormat):
    """A folder of ``checkpoint_rank-RRRRR-of-WWWWW.pt`` files from ``XLAFSDPStrategy(state_dict_type="sharded")``.

    The consolidated file holds every model entry as a full state dict with the unwrapped
    model's keys, and rank 0's plain values. Optimizer entries are left out: their state
    belongs to flat parameter shards and has no full form.
    """

    @staticmethod
    def detect(path: Path) -> bool:
        """The folder holds rank files of this format."""
        return path.is_dir() and any(path.glob(SHARD_FILE_PATTERN))

    def consolidate(self, path: Path, output: Path) -> None:
        """Assemble the shards of every rank file into one ``torch.save`` file (torch alone does it).

        Raises:
            ValueError: Rank files are missing, or the folder mixes files of different runs.
        """
        shards = _read_rank_files(Path(path))
        meta = shards[0][META_KEY]
        result: dict[str, Any] = {}
        for key, value in shards[0].items():
            if key == META_KEY or key in meta["optimizers"]:
                continue
            if key in meta["shard_metadata"]:
                value = consolidate_shards([shard[key] for shard in shards], meta["shard_metadata"][key])
            result[key] = value
        with atomic_output(Path(output)) as temporary:
            torch.save(result, temporary)


def _read_rank_files(folder: Path) -> list[dict[str, Any]]:
    found: dict[int, set[int]] = {}
    for file in folder.glob(SHARD_FILE_PATTERN):
        match = _RANK_FILE.search(file.name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if len(found) != 1:
        raise ValueError(
            f"'{folder}' mixes rank files written by {sorted(found)} processes; keep the files of one save only."
        )
    ((world_size, ranks),) = found.items()
    missing = sorted(set(range(world_size)) - ranks)
    if missing:
        raise ValueError(
            f"'{folder}' lacks the files of rank(s) {', '.join(map(str, missing))} of {world_size}; copy every "
            "host's files into one folder before consolidating."
        )
    return [torch.load(shard_file(folder, rank, world_size), weights_only=True) for rank in range(world_size)]
