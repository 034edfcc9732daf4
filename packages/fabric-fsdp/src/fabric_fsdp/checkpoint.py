"""Checkpoint layouts of the sharded strategies, and the one conversion a plain script needs.

**Sharded** (``state_dict_type="sharded"``, the default): ``fabric.save(path, state)`` writes
a ``torch.distributed.checkpoint`` (DCP) directory at ``path``: each process writes the
shards it holds (``__<rank>_0.distcp`` files) and rank 0 writes ``.metadata``. The directory
holds the same nested dict ``state`` describes:

- ``"model"`` (any key naming a module): the module's state dict, keys as in the plain
  model (``"0.weight"``), tensors sharded as they were in memory;
- ``"optimizer"`` (any key naming an optimizer): ``{"state": {param_name: {...}},
  "param_groups": [{..., "params": [param_name, ...]}]}``, keyed by parameter *names*
  (the form ``torch.distributed.checkpoint.state_dict`` uses), so it can be resharded;
- every other entry as it was (tensors as tensors, other objects pickled).

It loads at any number of processes. ``fabric checkpoint consolidate DIR OUT`` turns it into
one ``torch.save`` file holding that dict with full tensors: ``out["model"]`` goes straight
into ``model.load_state_dict``; ``optimizer_state_to_torch(out["optimizer"])`` goes into
``optimizer.load_state_dict`` of an optimizer built over ``model.parameters()``.

**Full** (``state_dict_type="full"``): rank 0 writes one ``torch.save`` file with exactly
what a single-device run would write: model state dicts and index-keyed optimizer state
dicts with full tensors. Plain ``torch.load`` reads it.
"""

from __future__ import annotations

from fabric_core.io.optimizer_state import optimizer_state_to_torch

__all__ = ["optimizer_state_to_torch"]
