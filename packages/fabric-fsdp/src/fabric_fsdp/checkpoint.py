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

from typing import Any

__all__ = ["optimizer_state_to_torch"]


def optimizer_state_to_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Turn a name-keyed optimizer state dict into the index-keyed form of ``Optimizer.state_dict()``.

    Parameters are numbered in the order the parameter groups list them, which is how
    ``torch.optim.Optimizer`` numbers its parameters: load the result into an optimizer
    built over the same parameters in the same order (``model.parameters()``). A state
    dict that is index-keyed already is returned unchanged.

    Example::

        out = torch.load("consolidated.pt")
        model.load_state_dict(out["model"])
        optimizer = torch.optim.AdamW(model.parameters())
        optimizer.load_state_dict(optimizer_state_to_torch(out["optimizer"]))

    Raises:
        ValueError: The dict has no ``param_groups`` list.
    """
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list):
        raise ValueError(
            "This is not an optimizer state dict: it has no 'param_groups' list. Pass the optimizer entry of a "
            "checkpoint, e.g. out['optimizer']."
        )
    index: dict[Any, int] = {}
    converted_groups = []
    for group in groups:
        params = list(group["params"])
        if params and not isinstance(params[0], str):
            return state_dict
        for name in params:
            index.setdefault(name, len(index))
        converted_groups.append({**group, "params": [index[name] for name in params]})
    state = {index[name]: value for name, value in state_dict.get("state", {}).items() if name in index}
    return {"state": state, "param_groups": converted_groups}
