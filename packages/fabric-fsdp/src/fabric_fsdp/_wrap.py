"""Applying ``fully_shard`` to the submodules a policy selects (checkpointing and compile: ``_blocks``).

FSDP2 groups parameters by the module ``fully_shard`` was called on: each group is
all-gathered in one collective before that module's forward and reduce-scattered in one
collective after its backward. Calls go bottom-up (children before parents) and end with
the root, which takes every parameter no selected submodule claimed.
"""

from __future__ import annotations

import itertools
from typing import Any

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from fabric_fsdp._options import ModulePredicate

__all__ = ["select_modules", "shard_module"]


def select_modules(root: nn.Module, predicate: ModulePredicate) -> list[nn.Module]:
    """The submodules of ``root`` (never ``root`` itself) that ``predicate`` selects, bottom-up.

    The predicate sees each module with the number of parameters in its subtree that no
    selected descendant claimed, the way FSDP1's size-based policies count. A module
    reachable twice is visited once.
    """
    chosen: list[nn.Module] = []
    seen: set[int] = set()

    def visit(module: nn.Module) -> int:
        if id(module) in seen:
            return 0
        seen.add(id(module))
        unclaimed = sum(visit(child) for child in module.children())
        unclaimed += sum(p.numel() for p in module.parameters(recurse=False))
        if module is not root and predicate(module, unclaimed):
            chosen.append(module)
            return 0
        return unclaimed

    visit(root)
    return chosen


def shard_module(
    root: nn.Module,
    *,
    mesh: DeviceMesh,
    reshard_after_forward: bool | int | None,
    wrap_predicate: ModulePredicate | None,
    mp_policy: MixedPrecisionPolicy,
    offload_policy: OffloadPolicy,
    forward_prefetch: bool,
    extra: dict[str, Any] | None = None,
) -> nn.Module:
    """Call ``fully_shard`` on each selected submodule, then on ``root`` (in place).

    Submodules already sharded by the user are left as they are. The root keeps FSDP2's
    default for ``reshard_after_forward`` (``False``: backward needs its parameters at once)
    unless ``reshard_after_forward`` is ``False`` anyway.

    With ``forward_prefetch``, each selected submodule starts the all-gather of the next
    one (in selection order, which is execution order for models that call their layers in
    the order they were registered) before its own forward runs. ``extra`` holds further
    ``fully_shard`` keywords, passed to every call.
    """
    common: dict[str, Any] = {
        **(extra or {}),
        "mesh": mesh,
        "mp_policy": mp_policy,
        "offload_policy": offload_policy,
    }
    selected = select_modules(root, wrap_predicate) if wrap_predicate is not None else []
    sharded: list[FSDPModule] = []
    for module in selected:
        if not isinstance(module, FSDPModule):
            fully_shard(module, reshard_after_forward=reshard_after_forward, **common)
        sharded.append(module)  # type: ignore[arg-type]
    if not isinstance(root, FSDPModule):
        fully_shard(root, reshard_after_forward=False if reshard_after_forward is False else None, **common)
    if forward_prefetch:
        for current, following in itertools.pairwise(sharded):
            current.set_modules_to_forward_prefetch([following])
    return root
