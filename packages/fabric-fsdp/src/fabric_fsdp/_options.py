"""Turning ``FSDPStrategy``'s FSDP1-style arguments into FSDP2 settings.

Each ``resolve_*`` function validates one argument and returns the value FSDP2 needs,
or raises an error that names the argument and the values it accepts.

Glossary: FSDP1's *sharding strategy* becomes two FSDP2 settings: ``reshard_after_forward``
(are a module's gathered parameters freed right after its forward?) and the shape of the
device mesh (1-D: shard over every process; 2-D ``(replicate, shard)``: shard within each
group of processes and replicate across groups).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy

__all__ = [
    "SHARDING_STRATEGIES",
    "MixedPrecisionSettings",
    "ModulePredicate",
    "ShardingPlan",
    "check_compatibility_arguments",
    "fully_shard_parameters",
    "offload_policy_for",
    "resolve_activation_checkpointing",
    "resolve_cpu_offload",
    "resolve_fully_shard_kwargs",
    "resolve_mixed_precision",
    "resolve_module_policy",
    "resolve_sharding_strategy",
    "resolve_state_dict_type",
]

ModulePredicate = Callable[[nn.Module, int], bool]
"""``(module, parameters not yet claimed by a submodule) -> whether the module is selected``."""


@dataclass(frozen=True)
class ShardingPlan:
    """What a sharding strategy means for FSDP2.

    Attributes:
        name: The FSDP1 name (``"FULL_SHARD"``, ...).
        reshard_after_forward: Free gathered parameters after each forward (``True``) or
            keep them until backward (``False``: less communication, more memory).
        hybrid: Use a 2-D ``(replicate, shard)`` mesh instead of a 1-D one.
        replicate_only: Shard over groups of one process: every process keeps everything
            and gradients are all-reduced (``NO_SHARD``).
    """

    name: str
    reshard_after_forward: bool
    hybrid: bool = False
    replicate_only: bool = False


SHARDING_STRATEGIES: Final[dict[str, ShardingPlan]] = {
    "FULL_SHARD": ShardingPlan("FULL_SHARD", reshard_after_forward=True),
    "SHARD_GRAD_OP": ShardingPlan("SHARD_GRAD_OP", reshard_after_forward=False),
    "HYBRID_SHARD": ShardingPlan("HYBRID_SHARD", reshard_after_forward=True, hybrid=True),
    "_HYBRID_SHARD_ZERO2": ShardingPlan("_HYBRID_SHARD_ZERO2", reshard_after_forward=False, hybrid=True),
    "NO_SHARD": ShardingPlan("NO_SHARD", reshard_after_forward=False, hybrid=True, replicate_only=True),
}
"""FSDP1 sharding strategy names and their FSDP2 meaning."""


def resolve_sharding_strategy(value: Any) -> ShardingPlan:
    """The plan for ``sharding_strategy``: a name (any case) or a ``torch.distributed.fsdp.ShardingStrategy``.

    ``None`` means ``"FULL_SHARD"``.

    Raises:
        ValueError: The name is not a sharding strategy.
    """
    if value is None:
        return SHARDING_STRATEGIES["FULL_SHARD"]
    name = getattr(value, "name", value)
    plan = SHARDING_STRATEGIES.get(name.upper()) if isinstance(name, str) else None
    if plan is None:
        raise ValueError(
            f"FSDPStrategy(sharding_strategy={value!r}) is not supported. Choose one of "
            f"{', '.join(repr(n) for n in SHARDING_STRATEGIES if not n.startswith('_'))} "
            "(a string or torch.distributed.fsdp.ShardingStrategy)."
        )
    return plan


def resolve_state_dict_type(value: Any) -> Literal["full", "sharded"]:
    """``state_dict_type`` as ``"full"`` or ``"sharded"``.

    ``None`` means ``"sharded"``. FSDP1's ``StateDictType.FULL_STATE_DICT`` and
    ``SHARDED_STATE_DICT`` mean ``"full"`` and ``"sharded"``.

    Raises:
        ValueError: Any other value (FSDP1's ``LOCAL_STATE_DICT`` included: FSDP2 has no
            flat-parameter layout to save).
    """
    if value is None:
        return "sharded"
    name = getattr(value, "name", None)
    if isinstance(name, str) and name in _STATE_DICT_TYPES:
        return _STATE_DICT_TYPES[name]
    if value not in ("full", "sharded"):
        raise ValueError(
            f"FSDPStrategy(state_dict_type={value!r}) is not supported. Use 'sharded' (a "
            "torch.distributed.checkpoint directory, each process writes its shards) or 'full' (one file "
            "written by rank 0); StateDictType.SHARDED_STATE_DICT and FULL_STATE_DICT mean the same."
        )
    return value


_STATE_DICT_TYPES: Final[dict[str, Literal["full", "sharded"]]] = {
    "FULL_STATE_DICT": "full",
    "SHARDED_STATE_DICT": "sharded",
}


def resolve_cpu_offload(value: Any) -> bool | CPUOffloadPolicy:
    """``cpu_offload`` as ``False``, ``True`` (a policy fitting the device) or the policy given.

    Accepts ``None``/``bool``, an FSDP2 ``CPUOffloadPolicy`` (or a plain ``OffloadPolicy``:
    no offloading), or FSDP1's ``CPUOffload(offload_params=...)``.

    Raises:
        TypeError: Any other value.
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, CPUOffloadPolicy):
        return value
    if type(value) is OffloadPolicy:  # FSDP2's "no offloading"
        return False
    if type(value).__name__ == "CPUOffload" and hasattr(value, "offload_params"):
        return bool(value.offload_params)
    raise TypeError(
        f"FSDPStrategy(cpu_offload={value!r}) is not supported. Pass True, False, "
        "torch.distributed.fsdp.CPUOffloadPolicy(...) or torch.distributed.fsdp.CPUOffload(offload_params=True)."
    )


def offload_policy_for(cpu_offload: bool | CPUOffloadPolicy, device_type: str) -> OffloadPolicy:
    """The FSDP2 offload policy for a resolved ``cpu_offload`` on ``device_type``.

    Pinned host memory speeds up copies to a CUDA device and needs one, so ``True`` pins
    only when the strategy runs on CUDA.

    Raises:
        ValueError: A ``CPUOffloadPolicy(pin_memory=True)`` was given but no CUDA device is present.
    """
    if cpu_offload is False:
        return OffloadPolicy()
    if cpu_offload is True:
        return CPUOffloadPolicy(pin_memory=device_type == "cuda")
    if cpu_offload.pin_memory and not torch.cuda.is_available():
        raise ValueError(
            "CPUOffloadPolicy(pin_memory=True) pins host memory for copies to a CUDA device, and this machine "
            "has none. Pass cpu_offload=True (pins only on CUDA) or CPUOffloadPolicy(pin_memory=False)."
        )
    return cpu_offload


@dataclass(frozen=True)
class MixedPrecisionSettings:
    """An FSDP2 mixed precision policy plus the dtype buffers are cast to before sharding.

    Attributes:
        policy: The ``MixedPrecisionPolicy`` handed to every ``fully_shard`` call.
        buffer_dtype: FSDP1's ``buffer_dtype``; FSDP2 does not manage buffers, so floating
            buffers are cast once before sharding (``None``: left as they are).
    """

    policy: MixedPrecisionPolicy
    buffer_dtype: torch.dtype | None = None


def resolve_mixed_precision(value: Any) -> MixedPrecisionSettings | None:
    """``mixed_precision`` as FSDP2 settings.

    Accepts an FSDP2 ``MixedPrecisionPolicy`` or FSDP1's ``MixedPrecision``, whose
    ``param_dtype`` and ``reduce_dtype`` carry over, ``cast_forward_inputs`` or
    ``cast_root_forward_inputs`` becomes ``cast_forward_inputs``, and ``buffer_dtype`` casts
    buffers once.

    Raises:
        ValueError: FSDP1's ``keep_low_precision_grads=True``, which FSDP2 cannot do
            (gradients are always reduced into the sharded parameters' dtype).
        TypeError: Any other kind of value.
    """
    if value is None:
        return None
    if isinstance(value, MixedPrecisionPolicy):
        return MixedPrecisionSettings(value)
    if type(value).__name__ == "MixedPrecision" and hasattr(value, "keep_low_precision_grads"):
        if value.keep_low_precision_grads:
            raise ValueError(
                "FSDPStrategy(mixed_precision=MixedPrecision(keep_low_precision_grads=True)) has no FSDP2 "
                "equivalent: gradients always land in the sharded parameters' dtype. Remove the flag, or keep "
                "the parameters themselves in low precision with Fabric(precision='bf16-true')."
            )
        policy = MixedPrecisionPolicy(
            param_dtype=value.param_dtype,
            reduce_dtype=value.reduce_dtype,
            cast_forward_inputs=bool(value.cast_forward_inputs or value.cast_root_forward_inputs),
        )
        return MixedPrecisionSettings(policy, buffer_dtype=value.buffer_dtype)
    raise TypeError(
        f"FSDPStrategy(mixed_precision={value!r}) is not supported. Pass "
        "torch.distributed.fsdp.MixedPrecisionPolicy(param_dtype=..., reduce_dtype=...), FSDP1's "
        "MixedPrecision(...), or use Fabric(precision='bf16-mixed') instead."
    )


def resolve_module_policy(value: Any, argument: str) -> ModulePredicate | None:
    """A predicate that selects submodules, from a wrap or checkpointing policy.

    Accepted forms of ``value``:

    - ``None``: select nothing.
    - An ``nn.Module`` subclass, or a set, list or tuple of them: select instances.
    - FSDP1's ``ModuleWrapPolicy`` (its classes) or ``CustomPolicy`` (its lambda).
    - A callable ``fn(module) -> bool``.
    - An FSDP1 policy callable ``fn(module, recurse, nonwrapped_numel) -> bool`` (e.g.
      ``functools.partial(size_based_auto_wrap_policy, min_num_params=...)``): it is called
      with ``recurse=False`` and the number of parameters not already claimed below. Its
      other parameters must be bound (``functools.partial``): a bare
      ``transformer_auto_wrap_policy`` does not know the layer classes.

    Raises:
        TypeError: Anything else, or an FSDP1 policy with parameters left unbound; the
            message names ``argument`` and the fix.
    """
    if value is None:
        return None
    accepted = (
        "Pass a set of layer classes (e.g. {Block}), a callable module -> bool, or an FSDP1 policy such as "
        "ModuleWrapPolicy({Block})."
    )
    if isinstance(value, nn.Module):
        name = type(value).__name__
        raise TypeError(
            f"FSDPStrategy({argument}={name}(...)) is a module instance; a policy selects modules by class. "
            f"Pass the class: {argument}={{{name}}}."
        )
    classes = _module_classes(value, argument)
    if classes is not None:
        return _InstanceOf(classes)
    lambda_fn = getattr(value, "_lambda_fn", None)
    if callable(lambda_fn):  # FSDP1 CustomPolicy
        return _ModuleCallable(lambda_fn)
    if callable(value):
        if not _takes_fsdp1_arguments(value):
            _check_takes_a_module(value, argument, accepted)
            return _ModuleCallable(value)
        _check_bound(value, argument)
        return _FSDP1Callable(value)
    raise TypeError(f"FSDPStrategy({argument}={value!r}) is not supported. {accepted}")


def resolve_activation_checkpointing(layers: Any, policy: Any) -> ModulePredicate | bool | None:
    """What ``activation_checkpointing`` / ``activation_checkpointing_policy`` select for recomputation.

    Returns:
        ``None``: nothing is checkpointed (``None`` or ``False`` and no policy);
        ``True``: the modules the auto-wrap policy selects;
        otherwise the predicate for the layer classes or the policy given.

    Raises:
        ValueError: Both were given.
        TypeError: Either is of an unsupported kind.
    """
    if layers is not None and layers is not False and policy is not None:
        raise ValueError(
            "Pass either activation_checkpointing (True, or layer classes) or activation_checkpointing_policy, "
            "not both; activation_checkpointing_policy={Block} is the same as activation_checkpointing=[Block]."
        )
    if layers is True:
        return True
    if layers is not None and layers is not False:
        if _module_classes(layers, "activation_checkpointing") is None:
            raise TypeError(
                f"FSDPStrategy(activation_checkpointing={layers!r}) must be True, False, a layer class or a list "
                "of them; for a callable use activation_checkpointing_policy=."
            )
        return resolve_module_policy(layers, "activation_checkpointing")
    return resolve_module_policy(policy, "activation_checkpointing_policy")


def check_compatibility_arguments(
    use_orig_params: Any, limit_all_gathers: Any, sync_module_states: Any, forward_prefetch: Any
) -> None:
    """Validate the FSDP1 flags that FSDP2 always honours, does not need, or maps.

    Both values of ``use_orig_params`` and ``limit_all_gathers`` are accepted: FSDP2 always
    keeps the original parameters (as DTensor shards), and bounds its in-flight all-gathers
    without FSDP1's rate limiter.

    Raises:
        TypeError: A flag is not a bool.
    """
    flags = {
        "use_orig_params": use_orig_params,
        "limit_all_gathers": limit_all_gathers,
        "sync_module_states": sync_module_states,
        "forward_prefetch": forward_prefetch,
    }
    for name, flag in flags.items():
        if flag is not None and not isinstance(flag, bool):
            raise TypeError(f"FSDPStrategy({name}={flag!r}) must be True or False.")


def fully_shard_parameters() -> list[str]:
    """The keyword parameters of this torch's ``fully_shard`` (everything but ``module``)."""
    from torch.distributed.fsdp import fully_shard

    return [name for name in inspect.signature(fully_shard).parameters if name != "module"]


_FSDP1_ONLY_HINTS: Final[dict[str, str]] = {
    "backward_prefetch": "FSDP2 prefetches the next all-gather in backward by itself",
    "ignored_modules": "pass ignored_params={p for m in modules for p in m.parameters()} instead",
    "ignored_states": "pass ignored_params={...} instead",
    "param_init_fn": "build the model under fabric.init_module(empty_init=True) and give its layers "
    "reset_parameters()",
    "device_id": "Fabric places each process on its device",
    "process_group": "pass device_mesh=... (a DeviceMesh) instead",
}


def resolve_fully_shard_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check that every extra keyword of ``FSDPStrategy`` is a parameter of ``fully_shard``.

    Raises:
        TypeError: A keyword is not one of ``fully_shard``'s parameters; the message lists
            them (and says what to do instead for FSDP1-only keywords).
    """
    accepted = fully_shard_parameters()
    unknown = [name for name in kwargs if name not in accepted]
    if not unknown:
        return dict(kwargs)
    hints = [f"{name}: {_FSDP1_ONLY_HINTS[name]}" for name in unknown if name in _FSDP1_ONLY_HINTS]
    raise TypeError(
        f"FSDPStrategy got {', '.join(f'{name}=' for name in unknown)} which fully_shard does not take: extra "
        f"keyword arguments go to torch.distributed.fsdp.fully_shard, whose parameters are "
        f"{', '.join(accepted)}." + (f" FSDP1-only arguments: {'; '.join(hints)}." if hints else "")
    )


@dataclass(frozen=True)
class _InstanceOf:
    """Selects instances of the classes (a picklable predicate, so strategies survive spawning)."""

    classes: tuple[type[nn.Module], ...]

    def __call__(self, module: nn.Module, numel: int) -> bool:
        return isinstance(module, self.classes)


@dataclass(frozen=True)
class _ModuleCallable:
    """Selects what ``function(module)`` is true for."""

    function: Callable[[nn.Module], Any]

    def __call__(self, module: nn.Module, numel: int) -> bool:
        return bool(self.function(module))


@dataclass(frozen=True)
class _FSDP1Callable:
    """Selects what an FSDP1 policy ``function(module, recurse, nonwrapped_numel)`` is true for."""

    function: Callable[..., Any]

    def __call__(self, module: nn.Module, numel: int) -> bool:
        return bool(self.function(module=module, recurse=False, nonwrapped_numel=numel))


def _module_classes(value: Any, argument: str) -> tuple[type[nn.Module], ...] | None:
    if isinstance(value, type) and issubclass(value, nn.Module):
        return (value,)
    classes = getattr(value, "_module_classes", value)  # FSDP1 ModuleWrapPolicy keeps its classes here
    if isinstance(classes, (set, frozenset, list, tuple)) and classes:
        wrong = [c for c in classes if not (isinstance(c, type) and issubclass(c, nn.Module))]
        if not wrong:
            return tuple(classes)
        raise TypeError(
            f"FSDPStrategy({argument}=...) holds {', '.join(sorted(map(repr, wrong)))}, which "
            f"{'is' if len(wrong) == 1 else 'are'} not nn.Module subclasses. List the layer classes themselves "
            f"(e.g. {argument}={{nn.TransformerEncoderLayer}}), not their names or instances."
        )
    return None


def _check_takes_a_module(function: Callable[..., Any], argument: str, accepted: str) -> None:
    """Refuse a callable that cannot be called as ``function(module)``: one positional parameter, the rest optional."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes_one = any(p.kind in (*positional, inspect.Parameter.VAR_POSITIONAL) for p in parameters)
    required = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.kind in positional]
    kw_required = [
        p.name for p in parameters if p.default is p.empty and p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    if takes_one and len(required) <= 1 and not kw_required:
        return
    name = getattr(function, "__qualname__", repr(function))
    raise TypeError(
        f"FSDPStrategy({argument}={name}) takes ({', '.join(p.name for p in parameters)}), but it is called with "
        f"one module: a callable module -> bool, or an FSDP1 policy (module, recurse, nonwrapped_numel). {accepted}"
    )


def _check_bound(function: Callable[..., Any], argument: str) -> None:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    unbound = [
        name
        for name, parameter in parameters.items()
        if name not in ("module", "recurse", "nonwrapped_numel")
        and parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if not unbound:
        return
    name = getattr(function, "__name__", repr(function))
    if "transformer_layer_cls" in unbound:
        fix = (
            f"functools.partial({name}, transformer_layer_cls={{Block}}), or simply the set of layer classes: "
            f"{argument}={{Block}}"
        )
    else:
        fix = f"functools.partial({name}, {', '.join(f'{n}=...' for n in unbound)})"
    raise TypeError(
        f"FSDPStrategy({argument}={name}) is an FSDP1 policy whose {', '.join(unbound)} is not set, so it cannot "
        f"decide which modules to select. Pass {fix} (with your own layer class for Block)."
    )


def _takes_fsdp1_arguments(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return "recurse" in parameters and "nonwrapped_numel" in parameters
