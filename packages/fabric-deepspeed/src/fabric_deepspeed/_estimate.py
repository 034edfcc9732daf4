"""How DeepSpeed ZeRO lays a model out in memory, per rank (a dry run, without importing deepspeed).

The accounting follows DeepSpeed's own buffers (``deepspeed/runtime/zero``), with ``N``
processes and ``P`` parameter elements:

- The engine's weights are in the run's dtype (bfloat16/float16 under ``*-mixed`` and
  ``*-true``, float32 otherwise); gradients are in that dtype too.
- Stages 0-2 flatten the weights into one buffer per parameter group, padded to a
  multiple of ``2 * N`` elements; every rank keeps the whole buffer.
- Stages 1-2 keep a float32 master copy of the rank's ``1/N`` partition (a copy even
  when the weights are float32), and the optimizer state on it.
- After backward, stages 1 and 2 keep only the partition's gradients (DeepSpeed reduces
  stage-1 gradients into partitions at the accumulation boundary too; stage 2 does so
  during backward, so its peak is lower). Stage 0 keeps them all.
- Stage 3 splits each parameter into ``ceil(numel / N)`` elements per rank; parameters
  of at most ``stage3_param_persistence_threshold`` elements (default 1e5) also stay whole
  on every rank after their first use. The optimizer keeps a float32 master copy of the
  partition, a copy even for float32 weights (DeepSpeed's shortcut that would share it
  compares a ``torch.device`` with a device name, which is never equal). Gradients are
  kept as partitions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from torch import nn

from fabric_core.utilities.memory_layout import (
    ByteTally,
    MemoryEstimate,
    check_optimizer_kind,
    optimizer_state_bytes,
    planned_world_size,
    trainable,
)

if TYPE_CHECKING:
    from fabric_deepspeed.strategy import DeepSpeedStrategy

__all__ = ["estimate_zero"]

ALIGNMENT_FACTOR: Final = 2
"""DeepSpeed pads stage 0-2 flat buffers to a multiple of ``2 * world_size`` elements."""

DEFAULT_PERSISTENCE_THRESHOLD: Final = 100_000
"""DeepSpeed's ``stage3_param_persistence_threshold`` default (elements)."""

MASTER_BYTES: Final = 4
"""The optimizer's master weights (and their state) are float32."""


def estimate_zero(strategy: DeepSpeedStrategy, module: nn.Module, optimizer: str) -> MemoryEstimate:
    """The per-rank estimate for ``strategy``'s ZeRO stage and precision (see the module docstring)."""
    check_optimizer_kind(optimizer)
    world = planned_world_size(strategy)
    stage = strategy.zero_stage
    config = strategy.config
    half = bool(config.get("bf16", {}).get("enabled")) or bool(config.get("fp16", {}).get("enabled"))
    weight_bytes = 2 if half else 4
    params = [p for p in trainable(module) if p.requires_grad]
    numel = sum(p.numel() for p in params)
    notes = [
        f"ZeRO stage {stage} over {world} processes; weights and gradients in {8 * weight_bytes}-bit floats"
    ]
    if stage < 3:
        padded = math.ceil(numel / (ALIGNMENT_FACTOR * world)) * ALIGNMENT_FACTOR * world
        partition = padded // world if stage >= 1 else padded
        parameter = padded * weight_bytes
        gradient = partition * weight_bytes
        master = partition * MASTER_BYTES if stage >= 1 or half else 0
        state = master + optimizer_state_bytes(optimizer, partition, MASTER_BYTES, 1)
        notes.append("a float32 master copy of this rank's partition is counted with the optimizer state")
    else:
        zero = config.get("zero_optimization", {})
        threshold = int(zero.get("stage3_param_persistence_threshold", DEFAULT_PERSISTENCE_THRESHOLD))
        partition = sum(math.ceil(p.numel() / world) for p in params)
        persistent = sum(p.numel() for p in params if p.numel() <= threshold)
        parameter = (partition + persistent) * weight_bytes
        gradient = partition * weight_bytes
        master = partition * MASTER_BYTES
        state = master + optimizer_state_bytes(optimizer, partition, MASTER_BYTES, 1)
        notes.append(
            f"parameters of at most {threshold} elements (stage3_param_persistence_threshold) stay whole on every "
            f"rank: {persistent} elements here"
        )
    if zero_offloads(config, "offload_optimizer"):
        notes.append("offload_optimizer: the master weights and optimizer state are in CPU (or NVMe) memory")
    if zero_offloads(config, "offload_param"):
        notes.append("offload_param: the parameter partitions are in CPU (or NVMe) memory between uses")
    notes.append("not counted: DeepSpeed's communication buckets (reduce_bucket_size, allgather_bucket_size)")
    return ByteTally(optimizer, parameter, gradient, state).estimate(strategy, world, notes)


def zero_offloads(config: dict[str, object], section: str) -> bool:
    """Whether ``zero_optimization.<section>`` sends something off the device."""
    zero = config.get("zero_optimization")
    entry = zero.get(section) if isinstance(zero, dict) else None
    return isinstance(entry, dict) and entry.get("device") not in (None, "none")
