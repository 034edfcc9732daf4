"""Full optimizer states out of and into DeepSpeed ZeRO: what lets checkpoints travel between strategies.

Vocabulary of this module:

- *flat partition*: one rank's slice of a ZeRO parameter group (a sub-group under stage 3),
  flattened into one float32 tensor: the master weights the base torch optimizer steps,
  and, with the same layout, each of its per-parameter states (Adam's ``exp_avg``, ...).
- *name-keyed* optimizer state: the form of
  ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict``,
  ``{"state": {name: {"step": t, "exp_avg": t, ...}}, "param_groups": [{..., "params": [name, ...]}]}``
  with full tensors shaped like the parameters; *index-keyed*: ``optimizer.state_dict()``,
  whose ``"params"`` are the positions of the parameters in the optimizer's groups.

Out (`consolidate_optimizer_state`, one process, no process group): each per-parameter
state of the flat partitions of a checkpoint's ranks is reassembled with the function that
deepspeed's ``zero_to_fp32`` reassembles the master weights with (the states share their
layout), so weights and states are cut the same way.

In (`load_full_optimizer_state`, into a live engine): the states are written through
``deepspeed.utils.safe_set_full_optimizer_state`` (`set_full`), which finds each
parameter's slice of its rank's flat partition. The base optimizer creates its states at
its first step, so an engine that has not stepped yet gets zero states of the saved kinds
first, as deepspeed's own universal-checkpoint loader does.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fabric_core.io.optimizer_state import is_named
from fabric_core.utilities.rank_zero import warn_once

__all__ = ["consolidate_optimizer_state", "load_full_optimizer_state", "name_keyed", "set_full"]


# -- out: a checkpoint directory's partitions, as one name-keyed state -----------------------------


def consolidate_optimizer_state(tag_dir: Path, order: Sequence[str] = ()) -> dict[str, Any] | None:
    """The name-keyed, full float32 optimizer state of the ZeRO checkpoint in ``tag_dir`` (stages 1-3).

    Args:
        tag_dir: A tag directory holding ``*_optim_states.pt`` (one per rank) and the model states.
        order: Parameter names in the model's order, which each group's ``"params"`` follow
            (names not listed keep deepspeed's order, after them).

    Returns:
        The state, or ``None`` (said once in a warning) when the checkpoint's optimizer state
        cannot be converted.
    """
    from deepspeed.checkpoint import constants
    from deepspeed.utils import zero_to_fp32

    model_states = zero_to_fp32.parse_model_states(zero_to_fp32.get_model_state_files(str(tag_dir)))
    shards = [
        torch.load(file, map_location="cpu", weights_only=False, mmap=True)[constants.OPTIMIZER_STATE_DICT]
        for file in zero_to_fp32.get_optim_files(str(tag_dir))
    ]
    stage = int(shards[0][constants.ZERO_STAGE])
    partitions_key = constants.FP32_FLAT_GROUPS if stage == 3 else constants.SINGLE_PARTITION_OF_FP32_GROUPS
    inner = [
        shard.get(constants.BASE_OPTIMIZER_STATE, shard.get(constants.OPTIMIZER_STATE_DICT))
        for shard in shards
    ]
    if not all(isinstance(state, Mapping) and "param_groups" in state for state in inner):
        warn_once(
            f"The optimizer state of the DeepSpeed checkpoint '{tag_dir}' is not a torch optimizer's state per "
            "rank (an elastic ZeRO checkpoint?), so it is left out of the consolidated checkpoint: only the "
            "weights and the other entries travel. Save without zero_optimization.elastic_checkpoint to keep it."
        )
        return None
    partitions = [list(shard[partitions_key]) for shard in shards]
    names = [list(shapes) for shapes in model_states[0].param_shapes]
    full = _full_states(
        stage, inner, partitions, model_states, shards[0].get(constants.PARAM_ALIGNMENT_PADDINGS)
    )
    if full is None:
        return None
    rank, scalars = {name: i for i, name in enumerate(order)}, inner[0]["state"]
    state: dict[str, dict[str, Any]] = {}
    for index, group_names in enumerate(names):
        for name in group_names:
            entry = {  # the scalars (``step``) first, as torch orders them
                key: value.clone() if isinstance(value, torch.Tensor) else value
                for key, value in scalars.get(index, {}).items()
                if key not in full
            }
            entry.update({key: value[name] for key, value in full.items() if name in value})
            if entry:
                state[name] = entry
    groups = []
    for group in inner[0]["param_groups"]:
        members = [name for index in group["params"] for name in names[index]]
        members.sort(key=lambda name: rank.get(name, len(rank)))
        groups.append({**group, "params": members})
    return {
        "state": dict(sorted(state.items(), key=lambda item: rank.get(item[0], len(rank)))),
        "param_groups": groups,
    }


def _full_states(
    stage: int,
    inner: list[Mapping[str, Any]],
    partitions: list[list[torch.Tensor]],
    model_states: list[Any],
    alignment_paddings: Any,
) -> dict[str, dict[str, torch.Tensor]] | None:
    """Each per-parameter state kind of the flat partitions, reassembled into ``{kind: {name: full tensor}}``."""
    from deepspeed.utils import zero_to_fp32

    kinds = sorted(
        {
            key
            for state in inner
            for entry in state["state"].values()
            for key, value in entry.items()
            if isinstance(value, torch.Tensor) and value.dim() > 0
        }
    )
    world_size = len(partitions)
    full: dict[str, dict[str, torch.Tensor]] = {}
    for kind in kinds:
        flat_groups = []
        for state, ranks_partitions in zip(inner, partitions, strict=True):
            groups = []
            for index, partition in enumerate(ranks_partitions):
                value = state["state"].get(index, {}).get(kind)
                if not isinstance(value, torch.Tensor) or value.numel() < partition.numel():
                    warn_once(
                        f"The optimizer state '{kind}' of a DeepSpeed checkpoint is not laid out like the float32 "
                        "master weights (a factored or per-group state?), so the optimizer state is left out of the "
                        "consolidated checkpoint: only the weights and the other entries travel."
                    )
                    return None
                # ZeRO 1/2 save the master weights without the last rank's padding; the states keep it.
                groups.append(value.reshape(-1).narrow(0, 0, partition.numel()))
            flat_groups.append(groups)
        merged: dict[str, Any] = {}
        quiet = io.StringIO()  # deepspeed prints its progress for each merge (weights, then each state)
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            if stage == 3:
                zero_to_fp32._zero3_merge_trainable_params(merged, world_size, flat_groups, model_states)
                merged = zero_to_fp32.to_torch_tensor(merged)
            else:
                zero_to_fp32._zero2_merge_trainable_params(
                    merged, world_size, flat_groups, model_states, alignment_paddings
                )
        full[kind] = {name: tensor.clone() for name, tensor in merged.items()}
    return full


# -- in: a full optimizer state, into a live engine -------------------------------------------------


def name_keyed(state_dict: Mapping[str, Any], group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``state_dict`` keyed by parameter names: an index-keyed one through ``group_names``, a name-keyed one as is.

    Args:
        state_dict: An optimizer state dict, index- or name-keyed.
        group_names: The names of the parameters of each group of the optimizer it is for,
            in the optimizer's order (the order its indices count).

    Raises:
        ValueError: The state dict is not an optimizer's, or its groups do not match.
    """
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    if not isinstance(groups, list) or not isinstance(state_dict.get("state", {}), Mapping):
        raise ValueError(
            "An optimizer state dict has 'state' and 'param_groups' entries; this one has "
            f"{sorted(map(str, state_dict)) if isinstance(state_dict, Mapping) else type(state_dict).__name__}. "
            "Pass the optimizer's entry of the checkpoint."
        )
    if is_named(state_dict):
        return dict(state_dict)
    keys = [key for group in groups for key in group.get("params", [])]
    ordered = [name for names in group_names for name in names]
    if len(keys) != len(ordered) or [len(group["params"]) for group in groups] != [
        len(n) for n in group_names
    ]:
        raise ValueError(
            f"The checkpoint's optimizer state has {len(groups)} parameter group(s) of "
            f"{[len(group['params']) for group in groups]} parameters, but this optimizer has {len(group_names)} "
            f"of {[len(names) for names in group_names]}. Load it into an optimizer built the same way."
        )
    return {
        "state": {ordered[index]: value for index, value in state_dict.get("state", {}).items()},
        "param_groups": [{**group, "params": [ordered[i] for i in group["params"]]} for group in groups],
    }


def load_full_optimizer_state(
    engine: Any, state_dict: Mapping[str, Any], group_names: Sequence[Sequence[str]]
) -> None:
    """Load a full (unpartitioned) optimizer state dict, index- or name-keyed, into a DeepSpeed engine.

    The hyperparameters of each group (``lr``, ``betas``, ...) go into the groups DeepSpeed
    steps with; the per-parameter states into this rank's flat partitions; a scalar state
    (``step``) into every flat partition. Every process calls it with the same state.

    Args:
        engine: The engine, built with an optimizer.
        state_dict: The optimizer's entry of a single-file (or consolidated) checkpoint.
        group_names: The parameter names of each group of the optimizer given to
            ``fabric.setup``, in its order.

    Raises:
        ValueError: The groups or parameters do not match this optimizer's, or the engine's
            optimizer keeps its state where it cannot be set (NVMe, fp16 without ZeRO).
    """
    named = name_keyed(state_dict, group_names)
    _check_groups(named["param_groups"], group_names)
    zero, client = engine.optimizer, engine.basic_optimizer
    if zero is client:  # no ZeRO, float32: the client optimizer steps its own parameters
        client.load_state_dict(_index_keyed(named, group_names))
        return
    partitions = _flat_partitions(zero)
    for live, saved in zip(client.param_groups, named["param_groups"], strict=True):
        live.update({key: value for key, value in saved.items() if key != "params"})
    states: Mapping[str, Mapping[str, Any]] = named["state"]
    if not states:  # saved before the first step: nothing to restore per parameter
        return
    parameters = dict(engine.module.named_parameters())
    unknown = sorted(set(states) - set(parameters))
    if unknown:
        raise ValueError(
            f"The checkpoint's optimizer state names parameters the model does not have: {unknown[:5]}. Load it "
            "into the model it was saved with."
        )
    kinds, scalars = _state_kinds(states, parameters)
    created = False
    base = zero.optimizer
    for partition in partitions:
        held = base.state[partition]
        for kind in kinds:
            if kind not in held:
                held[kind] = torch.zeros_like(partition)
                created = True
        held.update(
            {
                key: value.clone() if isinstance(value, torch.Tensor) else value
                for key, value in scalars.items()
            }
        )
    relink = getattr(zero, "_lazy_init_hp_params_optimizer_state", None)
    if created and callable(relink):  # ZeRO 1/2, bf16: point each parameter's fragment at the new states
        zero._hp_optimizer_states_linked = False
        relink()
    for name, entry in states.items():
        parameter = parameters[name]
        for kind in kinds:
            if kind in entry:
                value = entry[kind].to(device=partitions[0].device, dtype=partitions[0].dtype)
                set_full(zero, parameter, value.reshape(_full_shape(parameter)), kind)


def set_full(zero: Any, parameter: torch.Tensor, value: torch.Tensor, kind: str | None = None) -> None:
    """Set this process's share of a parameter's float32 master weight (``kind=None``) or of its state ``kind``.

    ``deepspeed.utils.safe_set_full_fp32_param`` / ``safe_set_full_optimizer_state``, except
    under ZeRO 3, where those fail for a parameter whose last partition is padded (a bias
    of one element on two ranks): there this rank's slice of the zero-padded value goes
    through the local setters (``safe_set_local_fp32_param`` / ``safe_set_local_optimizer_state``).

    Args:
        zero: The engine's DeepSpeed optimizer.
        parameter: A parameter of the engine's module.
        value: Its full value, shaped like the parameter.
        kind: The optimizer state to set (``"exp_avg"``, ...), or ``None`` for the weight.
    """
    from deepspeed import comm, utils

    if not hasattr(parameter, "ds_id"):
        if kind is None:
            utils.safe_set_full_fp32_param(parameter, value)
        else:
            utils.safe_set_full_optimizer_state(parameter, value, kind)
        return
    if not parameter.requires_grad:
        return
    group = getattr(parameter, "ds_process_group", zero.dp_process_group)
    local = parameter.ds_tensor.numel()  # type: ignore[attr-defined]  # ZeRO 3's partition of the parameter
    flat = value.reshape(-1)
    flat = torch.nn.functional.pad(flat, (0, local * comm.get_world_size(group=group) - flat.numel()))
    piece = flat.narrow(0, local * comm.get_rank(group=group), local)
    if kind is None:
        utils.safe_set_local_fp32_param(parameter, piece)
    else:
        utils.safe_set_local_optimizer_state(parameter, piece, kind)


def _check_groups(groups: list[Mapping[str, Any]], group_names: Sequence[Sequence[str]]) -> None:
    if len(groups) == len(group_names) and all(
        set(group["params"]) == set(names) for group, names in zip(groups, group_names, strict=True)
    ):
        return
    saved = "; ".join(_describe_group(group["params"]) for group in groups)
    live = "; ".join(_describe_group(names) for names in group_names)
    raise ValueError(
        f"The checkpoint's optimizer state has the parameter groups [{saved}], but this optimizer has [{live}]. "
        "Build the optimizer with the parameter groups it was saved with."
    )


def _describe_group(names: Sequence[str]) -> str:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} parameters: {shown}"


def _index_keyed(named: Mapping[str, Any], group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    index = {name: i for i, name in enumerate(name for names in group_names for name in names)}
    return {
        "state": {index[name]: value for name, value in named["state"].items()},
        "param_groups": [
            {**saved, "params": [index[name] for name in names]}
            for saved, names in zip(named["param_groups"], group_names, strict=True)
        ],
    }


def _flat_partitions(zero: Any) -> list[torch.Tensor]:
    """The flat float32 partitions the base optimizer steps (the attribute differs per ZeRO optimizer)."""
    if getattr(zero, "swap_optimizer", False):
        raise ValueError(
            "This DeepSpeed engine keeps its optimizer state on NVMe, where a full optimizer state from a file "
            "cannot be set. Load the checkpoint with offload_optimizer_device='cpu' (or no offload), save it as a "
            "DeepSpeed checkpoint, and resume from that."
        )
    for attribute in (
        "single_partition_of_fp32_groups",
        "fp32_partitioned_groups_flat",
        "fp32_groups_flat_partition",
    ):
        partitions = getattr(zero, attribute, None)
        if partitions:
            return list(partitions)
    raise ValueError(
        f"DeepSpeed's {type(zero).__name__} keeps no float32 partitions that a full optimizer state can be set in "
        "(fp16 without ZeRO). Use ZeRO (DeepSpeedStrategy(stage=1)) or bf16, or resume from a DeepSpeed checkpoint "
        "directory."
    )


def _full_shape(parameter: torch.Tensor) -> tuple[int, ...]:
    return tuple(getattr(parameter, "ds_shape", parameter.shape))


def _state_kinds(
    states: Mapping[str, Mapping[str, Any]], parameters: Mapping[str, torch.Tensor]
) -> tuple[list[str], dict[str, Any]]:
    """The per-parameter state kinds (tensors shaped like their parameter) and the scalar states with their value.

    DeepSpeed steps every parameter of a flat partition together, so a scalar state has one
    value there; parameters saved with different values (some skipped steps) get the largest,
    said once.
    """
    kinds: set[str] = set()
    values: dict[str, list[Any]] = {}
    for name, entry in states.items():
        shape = _full_shape(parameters[name])
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) == shape:
                kinds.add(key)
            elif isinstance(value, torch.Tensor) and value.numel() != 1:
                raise ValueError(
                    f"The optimizer state '{key}' of parameter '{name}' has shape {list(value.shape)}, neither the "
                    f"parameter's {list(shape)} nor a scalar, so DeepSpeed cannot partition it. Load the model "
                    "weights only (fabric.load(path, {'model': model}, strict=False))."
                )
            else:
                values.setdefault(key, []).append(value)
    scalars = {}
    for key, found in values.items():
        if not all(isinstance(value, (torch.Tensor, int, float)) for value in found):
            scalars[key] = found[0]
            continue
        numbers = [float(value) for value in found]
        if min(numbers) != max(numbers):
            warn_once(
                f"The checkpoint's optimizer state has different '{key}' values per parameter ({min(numbers)} to "
                f"{max(numbers)}), but DeepSpeed keeps one per partition: every parameter continues from "
                f"{max(numbers)}."
            )
        scalars[key] = found[max(range(len(found)), key=numbers.__getitem__)]
    return sorted(kinds), scalars
