"""Between XLA FSDP's sharded state dicts and full ones, and the per-rank checkpoint files.

Vocabulary:

- *sharded key*: a key of ``XlaFullyShardedDataParallel.state_dict()``, such as
  ``_fsdp_wrapped_module.0._fsdp_shard..weight``; its value is this rank's flat, padded slice.
- *full key*: the key of the same tensor in the unwrapped module (``0.weight``).
- *shard metadata*: ``XlaFullyShardedDataParallel.get_shard_metadata()``: the original name
  and size of every sharded tensor, how flattened parameters split, the world size and rank.

Rank ``r`` of ``w`` holds elements ``[r * n, (r + 1) * n)`` of the zero-padded flat tensor
(rows instead of elements with ``shard_param_on_dim_0=True``), where ``n`` is the shard size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from fabric_xla._runtime import sync, to_cpu

__all__ = [
    "META_KEY",
    "consolidate_shards",
    "SHARD_FILE_PATTERN",
    "full_key",
    "gather_full_state_dict",
    "is_sharded_state_dict",
    "shard_file",
    "shard_full_state_dict",
]

META_KEY: Final = "__fabric_xla_fsdp__"
"""The entry of each per-rank file that records world size, rank and shard metadata."""

SHARD_FILE_PATTERN: Final = "checkpoint_rank-*-of-*.pt"

_SHARD_MARK: Final = "_fsdp_shard"
_FLAT_MARK: Final = "_fsdp_wrapped_module.flat_param_"
_WRAPPERS: Final = ("_fsdp_wrapped_module.", "_fpw_module.")


def shard_file(folder: str | Path, rank: int, world_size: int) -> Path:
    """The file of ``rank`` in a sharded checkpoint folder."""
    return Path(folder) / f"checkpoint_rank-{rank:05d}-of-{world_size:05d}.pt"


def full_key(key: str) -> str:
    """The unwrapped module's key for a key that XLA FSDP's wrappers prefixed."""
    for wrapper in _WRAPPERS:
        key = key.replace(wrapper, "")
    return key


def is_sharded_state_dict(state_dict: dict[str, Any]) -> bool:
    """Whether ``state_dict`` holds XLA FSDP shards rather than full tensors."""
    return any(_SHARD_MARK in key for key in state_dict)


def gather_full_state_dict(module: nn.Module, keep: bool) -> dict[str, Any]:
    """The full state dict of an XLA FSDP module, with the unwrapped module's keys, as CPU tensors.

    Every process must call this: each shard is all-gathered over the processes (one
    parameter at a time on the device, as in the forward pass). Only where ``keep`` is true
    are the gathered tensors copied to the CPU and assembled; elsewhere ``{}`` is returned.
    """
    import torch_xla.core.xla_model as xm

    gathered = {
        key: xm.all_gather(value, dim=0) if _SHARD_MARK in key else value
        for key, value in module.state_dict().items()
    }
    sync()
    if not keep:
        return {}
    # The gathered tensors are all shards side by side: one "shard" of a world of one.
    return consolidate_shards([to_cpu(gathered)], module.get_shard_metadata())  # type: ignore[operator]


def consolidate_shards(shards: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """The full state dict, with the unwrapped module's keys, from every rank's sharded state dict.

    The inverse of `shard_full_state_dict` (and what torch_xla's
    ``consolidate_sharded_state_dicts`` computes), in plain torch: it runs without torch_xla.

    Args:
        shards: Each rank's ``state_dict()`` in rank order (CPU tensors).
        metadata: ``get_shard_metadata()`` of any rank.
    """
    full: dict[str, Any] = {}
    buffers = metadata.get("buffer_info", {})
    for key, value in shards[0].items():
        if _SHARD_MARK not in key:
            dtype = buffers.get(key, {}).get("_orig_dtype")
            full[full_key(key)] = value.to(dtype) if dtype is not None else value
            continue
        joined = torch.cat([shard[key] for shard in shards])
        sources, size = _sources(key, metadata), _original_size(key, metadata)
        if len(sources) == 1 and joined.dim() > 1:
            full[sources[0]] = joined[: size[0]]
            continue
        flat = joined.reshape(-1)
        if len(sources) == 1:
            full[sources[0]] = flat[: _numel(size)].view(size)
            continue
        _, shapes, numels = _flatten_info(key, metadata)
        for name, shape, piece in zip(sources, shapes, flat[: sum(numels)].split(list(numels))):
            full[name] = piece.view(shape)
    return full


def shard_full_state_dict(
    full: dict[str, Any], sharded: dict[str, Any], metadata: dict[str, Any], strict: bool = True
) -> dict[str, Any]:
    """This rank's sharded state dict, cut from a full one.

    Args:
        full: The state dict of the unwrapped module.
        sharded: The XLA FSDP module's own ``state_dict()``, which gives the keys, shard
            shapes and dtypes.
        metadata: The module's ``get_shard_metadata()`` (its ``rank`` and ``world_size`` say
            which slice to cut).
        strict: Require ``full`` to hold exactly the module's tensors.

    Raises:
        KeyError: ``strict`` is true and ``full`` lacks a tensor of the module or holds one
            the module does not have.
    """
    rank, world_size = int(metadata["rank"]), int(metadata["world_size"])
    result: dict[str, Any] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key, template in sharded.items():
        sources = _sources(key, metadata)
        absent = [name for name in sources if name not in full]
        if absent:
            missing += absent
            continue
        used.update(sources)
        if _SHARD_MARK not in key:
            result[key] = torch.as_tensor(full[sources[0]]).to(template.dtype)
            continue
        tensor = torch.cat([torch.as_tensor(full[name]).reshape(-1) for name in sources])
        if len(sources) == 1 and template.dim() > 1:
            tensor = torch.as_tensor(full[sources[0]])
        result[key] = _slice(tensor, template, rank, world_size).to(template.dtype)
    unexpected = sorted(set(full) - used)
    if strict and (missing or unexpected):
        raise KeyError(
            "The state dict does not match the XLA FSDP model. "
            + (f"Missing: {', '.join(missing)}. " if missing else "")
            + (f"Unexpected: {', '.join(unexpected)}. " if unexpected else "")
            + "Pass strict=False to load the tensors that match."
        )
    return result


def _shard_info(key: str, metadata: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The wrapped name of the sharded entry ``key`` and its record in the shard metadata."""
    parts = key.split(".")
    index = next(i for i, part in enumerate(parts) if part.startswith(_SHARD_MARK))
    prefix, suffix = ".".join(parts[:index]), ".".join(parts[index:])
    info = metadata["shard_info"][prefix][suffix]
    return (f"{prefix}.{info['_orig_name']}" if prefix else info["_orig_name"]), info


def _original_size(key: str, metadata: dict[str, Any]) -> torch.Size:
    return torch.Size(_shard_info(key, metadata)[1]["_orig_size"])


def _flatten_info(key: str, metadata: dict[str, Any]) -> tuple[list[str], list[Any], list[int]]:
    """For a flattened parameter: the names, shapes and sizes of the parameters it concatenates."""
    names, shapes, numels = metadata["flatten_info"][_shard_info(key, metadata)[0]]
    return list(names), list(shapes), [int(n) for n in numels]


def _sources(key: str, metadata: dict[str, Any]) -> list[str]:
    """The full keys whose tensors make up the sharded entry ``key``."""
    if _SHARD_MARK not in key:
        return [full_key(key)]
    name = _shard_info(key, metadata)[0]
    if _FLAT_MARK not in name:
        return [full_key(name)]
    owner = name.rsplit(".", 1)[0]
    return [full_key(f"{owner}.{part}") for part in _flatten_info(key, metadata)[0]]


def _numel(size: torch.Size) -> int:
    count = 1
    for dim in size:
        count *= int(dim)
    return count


def _slice(tensor: torch.Tensor, template: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s slice of ``tensor``, padded with zeros to ``world_size`` shards of the template's size."""
    tensor = tensor.detach().cpu()
    if template.dim() <= 1:
        flat = tensor.reshape(-1)
        size = template.numel()
        padded = torch.zeros(size * world_size, dtype=flat.dtype)
        padded[: flat.numel()] = flat
        return padded[rank * size : (rank + 1) * size].clone()
    rows = template.shape[0]
    padded = torch.zeros((rows * world_size, *tensor.shape[1:]), dtype=tensor.dtype)
    padded[: tensor.shape[0]] = tensor
    return padded[rank * rows : (rank + 1) * rows].clone()
