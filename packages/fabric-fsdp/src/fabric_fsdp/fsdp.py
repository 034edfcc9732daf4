"""Fully sharded data parallel training on FSDP2 (``torch.distributed.fsdp.fully_shard``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launchers.elastic import StartMethod
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_fsdp import _blocks, _options
from fabric_fsdp._params import broadcast_module_states, has_meta_tensors
from fabric_fsdp._sharded import ShardedStrategy
from fabric_fsdp._wrap import select_modules, shard_module
from fabric_fsdp.precision import FSDPPrecision

__all__ = ["FSDPStrategy"]


class FSDPStrategy(ShardedStrategy):
    """Fully sharded data parallel training with FSDP2's ``fully_shard``.

    Each process keeps one shard (dim 0) of every parameter, of its gradient and of its
    optimizer state, as DTensors, so these take ``1/N`` of the memory they take under DDP
    with ``N`` processes. On the wire, a sharded module all-gathers its parameters before
    its forward (and again before its backward unless ``SHARD_GRAD_OP``), and
    reduce-scatters (averages) its gradients after its backward: about 1.5x the bytes of
    DDP's all-reduce. Each submodule the wrap policy selects is one such unit, so only one
    unit's full parameters exist at a time; without a policy the whole model is one unit.

    The optimizer can be created before or after ``fabric.setup``: sharding replaces every
    parameter object, and optimizers built over the old ones are re-pointed at the shards
    when they are set up (they must not have stepped yet).

    FSDP1 arguments (the seed's constructor), and what they do on FSDP2:

    - ``sharding_strategy``: ``None``/``FULL_SHARD`` (reshard after forward),
      ``SHARD_GRAD_OP`` (keep gathered parameters from forward to backward),
      ``HYBRID_SHARD`` (2-D mesh: shard within a node, replicate across nodes;
      ``device_mesh`` sets the shape), ``NO_SHARD`` (every process keeps everything;
      gradients are all-reduced).
    - ``cpu_offload``: ``True`` keeps shards, gradients and the optimizer step in CPU memory
      (an FSDP2 ``CPUOffloadPolicy``, pinned only on CUDA); FSDP1's
      ``CPUOffload(offload_params=True)`` means the same. ``None``/``False``: no offloading.
    - ``mixed_precision``: FSDP1's ``MixedPrecision`` maps ``param_dtype``,
      ``reduce_dtype`` and ``cast_forward_inputs`` onto FSDP2's ``MixedPrecisionPolicy``;
      ``buffer_dtype`` casts buffers once; ``keep_low_precision_grads=True`` is refused.
    - ``auto_wrap_policy``: FSDP1's ``ModuleWrapPolicy``, ``CustomPolicy`` and
      ``(module, recurse, nonwrapped_numel)`` callables (size- and transformer-based
      policies, bound with ``functools.partial``) select the modules that get their own
      ``fully_shard`` (see `configure_fsdp_auto_wrap_policy`).
    - ``activation_checkpointing``: ``True`` recomputes, in backward, the activations of
      the modules the wrap policy selects; layer classes select those instead.

    Per block (each module the wrap policy selects), ``fabric.setup`` applies, in this
    order: activation checkpointing, regional compile (``compile_blocks``), ``fully_shard``
    (see `fabric_fsdp._blocks` and the guide for why this order). Parameter names
    and state-dict keys do not change, so checkpoints load into the plain model.
    - ``state_dict_type``: ``None``/``"sharded"``/``StateDictType.SHARDED_STATE_DICT`` or
      ``"full"``/``StateDictType.FULL_STATE_DICT``.
    - ``use_orig_params``: both values accepted; FSDP2 always works on the original
      parameters (each one a DTensor shard), which is FSDP1's ``use_orig_params=True``.
    - ``limit_all_gathers``: both values accepted; FSDP2 bounds the memory of in-flight
      all-gathers itself, without FSDP1's CPU-blocking rate limiter.
    - ``sync_module_states``: ``True`` broadcasts rank 0's parameters and buffers before
      sharding, so processes that initialised differently start equal; ``False`` (FSDP2's
      behaviour) takes each shard from the local copy of each process.
    - ``forward_prefetch``: ``True`` makes each wrapped module start the next one's
      all-gather before its own forward (FSDP2's explicit prefetching,
      ``set_modules_to_forward_prefetch``); ``False`` is FSDP2's default, where each
      module's all-gather is issued when its forward starts.

    Args:
        cpu_offload: ``True``, an FSDP2 ``CPUOffloadPolicy``, or FSDP1's ``CPUOffload``
            (``None``: no offloading).
        mixed_precision: An FSDP2 ``MixedPrecisionPolicy`` or FSDP1's ``MixedPrecision``;
            wins over the policy a precision string implies (``None``: the precision
            plugin's policy).
        auto_wrap_policy: Which submodules get their own ``fully_shard``: a set of layer
            classes, a callable ``module -> bool``, or an FSDP1 policy (``None``: the whole
            model is one unit).
        activation_checkpointing: ``True`` (the wrap policy's modules), layer class(es), or
            ``None``/``False`` (none).
        activation_checkpointing_policy: Which modules to checkpoint, in the forms
            ``auto_wrap_policy`` takes.
        sharding_strategy: ``"FULL_SHARD"`` (``None``), ``"SHARD_GRAD_OP"``,
            ``"HYBRID_SHARD"``, ``"NO_SHARD"``, or ``torch.distributed.fsdp.ShardingStrategy``.
        state_dict_type: ``"sharded"`` (``None``; a DCP directory, loadable at any world
            size) or ``"full"`` (one file written by rank 0, loadable by plain ``torch.load``).
        use_orig_params: FSDP1 compatibility, see above.
        limit_all_gathers: FSDP1 compatibility, see above.
        sync_module_states: See above.
        forward_prefetch: See above.
        parallel_devices: One device per process on this node; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from; detected when omitted.
        checkpoint_io: How full (single-file) checkpoints are written.
        precision_plugin: The precision plugin; ``Fabric(precision="bf16-mixed")`` gives
            `FSDPPrecision`.
        process_group_backend: ``"gloo"`` (CPU default), ``"nccl"`` (CUDA default), ...
        timeout: How long collectives wait for the other processes (``None``: 5 minutes on
            gloo, so a skipped collective surfaces quickly; torch's default otherwise).
        accelerator: The accelerator; set by ``Fabric`` when omitted.
        device_mesh: ``(replicate, shard)`` sizes for ``HYBRID_SHARD`` (default: nodes x
            processes per node), or a ready ``DeviceMesh``.
        start_method: ``"popen"`` (re-run the script), ``"spawn"`` or ``"fork"``.
        precision: Lightning Fabric's name for ``precision_plugin``.
        compile_blocks: Compile each block the wrap policy selects on its own
            (``nn.Module.compile``, in place, after checkpointing and before
            ``fully_shard``): ``True`` with torch.compile's defaults, a dict of
            ``torch.compile`` keywords (e.g. ``{"mode": "max-autotune"}``), or ``False``.
            Blocks of one class share a compiled graph. With it on,
            ``fabric.setup(torch.compile(model))`` drops the whole-model compile (once
            warned) in favour of the per-block one.
        async_save: Write sharded checkpoints in the background (DCP's ``async_save``):
            ``fabric.save`` returns once this process's shards are copied to CPU memory,
            and the step loop goes on while they are written. The next save waits for the
            one in flight; ``fabric.load`` and teardown wait too. Costs one more copy of
            the shards in CPU memory while a save is in flight. Full files are always
            written at once.
        **kwargs: Passed to every ``fully_shard`` call: ``reshard_after_forward`` (wins over
            the sharding strategy's value for the wrapped modules), ``shard_placement_fn``,
            ``ignored_params``, ...; ``mesh``, ``mp_policy`` and ``offload_policy`` are other
            spellings of ``device_mesh``, ``mixed_precision`` and ``cpu_offload``.

    Everything after ``timeout`` is keyword-only.

    Raises:
        ValueError, TypeError: An argument has a value FSDP2 cannot honour, or a keyword is
            not a parameter of ``fully_shard``; the message says what to pass instead.
    """

    def __init__(
        self,
        cpu_offload: Any = None,
        mixed_precision: Any = None,
        auto_wrap_policy: Any = None,
        activation_checkpointing: Any = None,
        activation_checkpointing_policy: Any = None,
        sharding_strategy: Any = None,
        state_dict_type: Any = None,
        use_orig_params: bool = False,
        limit_all_gathers: bool = True,
        sync_module_states: bool = False,
        forward_prefetch: bool = False,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        *,
        accelerator: Accelerator | None = None,
        device_mesh: tuple[int, int] | DeviceMesh | None = None,
        start_method: StartMethod = "popen",
        precision: Precision | None = None,
        async_save: bool = False,
        compile_blocks: bool | dict[str, Any] = False,
        **kwargs: Any,
    ) -> None:
        self._compile_kwargs = _blocks.resolve_compile_blocks(compile_blocks, "FSDPStrategy")
        _options.check_compatibility_arguments(
            use_orig_params, limit_all_gathers, sync_module_states, forward_prefetch
        )
        shard_kwargs = _options.resolve_fully_shard_kwargs(kwargs)
        device_mesh = _take_spelling(shard_kwargs, "mesh", "device_mesh", device_mesh)
        mixed_precision = _take_spelling(shard_kwargs, "mp_policy", "mixed_precision", mixed_precision)
        cpu_offload = _take_spelling(shard_kwargs, "offload_policy", "cpu_offload", cpu_offload)
        self._plan = _options.resolve_sharding_strategy(sharding_strategy)
        self._reshard_after_forward: bool | int | None = shard_kwargs.pop(
            "reshard_after_forward", self._plan.reshard_after_forward
        )
        self._fully_shard_kwargs = shard_kwargs
        self._cpu_offload = _options.resolve_cpu_offload(cpu_offload)
        self._mixed_precision = _options.resolve_mixed_precision(mixed_precision)
        self._auto_wrap_policy = auto_wrap_policy
        self._wrap_predicate = _options.resolve_module_policy(auto_wrap_policy, "auto_wrap_policy")
        self._checkpointing = _options.resolve_activation_checkpointing(
            activation_checkpointing, activation_checkpointing_policy
        )
        if auto_wrap_policy is None and not self._overrides_wrap_policy():
            if self._checkpointing is True:
                raise ValueError(_CHECKPOINTING_NEEDS_POLICY)
            if self._compile_kwargs is not None:
                raise ValueError(_COMPILE_NEEDS_POLICY)
        self._sharded_checkpoints = _options.resolve_state_dict_type(state_dict_type) == "sharded"
        self._mesh_argument = _check_mesh_argument(device_mesh, self._plan)
        self._sync_module_states = bool(sync_module_states)
        self._forward_prefetch = bool(forward_prefetch)
        self._device_mesh: DeviceMesh | None = None
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
            async_save=async_save,
        )

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """``16-mixed`` and ``bf16-mixed`` give `FSDPPrecision`; other strings the core plugins."""
        if precision in ("16-mixed", "bf16-mixed"):
            return FSDPPrecision("float16" if precision == "16-mixed" else "bfloat16", device_type)
        return super().precision_for(precision, device_type)

    def configure(self, config: StrategyConfig) -> None:
        """Adopt devices and nodes, and check the device mesh fits the number of processes.

        Raises:
            ValueError: ``device_mesh`` does not multiply out to nodes x devices.
        """
        super().configure(config)
        shape = self._mesh_shape()
        world = self.num_nodes * self.num_processes
        if _product(shape) != world:
            raise ValueError(
                f"FSDPStrategy(device_mesh={self._mesh_argument!r}) has {_product(shape)} processes, but "
                f"Fabric(devices={self.num_processes}, num_nodes={self.num_nodes}) runs {world}. Make the "
                "(replicate, shard) sizes multiply to devices x num_nodes."
            )

    @property
    def device_mesh(self) -> DeviceMesh:
        """The mesh parameters are sharded over: 1-D ``("shard",)`` or 2-D ``("replicate", "shard")``.

        Built on first use, after the process group exists.
        """
        if isinstance(self._mesh_argument, DeviceMesh):
            return self._mesh_argument
        if self._device_mesh is None:
            shape = self._mesh_shape()
            names = ("replicate", "shard") if len(shape) == 2 else ("shard",)
            self._device_mesh = init_device_mesh(self.root_device.type, shape, mesh_dim_names=names)
        return self._device_mesh

    @property
    def mp_policy(self) -> MixedPrecisionPolicy:
        """The FSDP2 mixed precision policy: ``mixed_precision=`` if given, else the precision plugin's."""
        if self._mixed_precision is not None:
            return self._mixed_precision.policy
        if isinstance(self.precision, FSDPPrecision):
            return self.precision.mp_policy
        return MixedPrecisionPolicy()

    def configure_fsdp_auto_wrap_policy(self, module: nn.Module) -> Any:
        """The auto-wrap policy for ``module``: which of its submodules get their own ``fully_shard``.

        ``fabric.setup`` calls it once per model, before sharding. The default returns the
        ``auto_wrap_policy`` the strategy was built with (``None``: the whole model is one
        unit). Override it to choose per model, e.g. by looking for the model's repeated
        block class; any form ``auto_wrap_policy`` accepts may be returned. With
        ``activation_checkpointing=True``, the modules it selects are also checkpointed.
        """
        return self._auto_wrap_policy

    def _parallelize(self, module: nn.Module) -> nn.Module:
        policy = self.configure_fsdp_auto_wrap_policy(module)
        wrap_predicate = (
            self._wrap_predicate
            if policy is self._auto_wrap_policy
            else _options.resolve_module_policy(policy, "auto_wrap_policy")
        )
        if wrap_predicate is None and (self._checkpointing is True or self._compile_kwargs is not None):
            raise ValueError(
                _CHECKPOINTING_NEEDS_POLICY if self._checkpointing is True else _COMPILE_NEEDS_POLICY
            )
        if self._checkpointing is True:
            checkpoint_predicate: _options.ModulePredicate | None = wrap_predicate
        else:
            checkpoint_predicate = self._checkpointing if callable(self._checkpointing) else None
        buffer_dtype = self._mixed_precision.buffer_dtype if self._mixed_precision else None
        if buffer_dtype is not None:
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    buffer.data = buffer.data.to(buffer_dtype)
        if self._sync_module_states and not has_meta_tensors(module):
            broadcast_module_states(module)
        # Per block: 1. activation checkpointing, 2. regional compile, 3. fully_shard (see _blocks).
        to_checkpoint: list[nn.Module] = []
        if checkpoint_predicate is not None:
            to_checkpoint = select_modules(module, checkpoint_predicate)
            _blocks.check_selects(module, to_checkpoint, "activation_checkpointing", "FSDPStrategy")
        to_compile: list[nn.Module] = []
        if self._compile_kwargs is not None and wrap_predicate is not None:
            to_compile = select_modules(module, wrap_predicate)
            _blocks.check_selects(module, to_compile, "auto_wrap_policy", "FSDPStrategy")
        _blocks.apply_in_order(to_checkpoint, to_compile, self._compile_kwargs or {})
        return shard_module(
            module,
            mesh=self.device_mesh,
            reshard_after_forward=self._reshard_after_forward,
            wrap_predicate=wrap_predicate,
            mp_policy=self.mp_policy,
            offload_policy=_options.offload_policy_for(self._cpu_offload, self.root_device.type),
            forward_prefetch=self._forward_prefetch,
            extra=self._fully_shard_kwargs,
        )

    def keep_whole_model_compile(self, compiled: nn.Module) -> bool:
        """``False`` with ``compile_blocks``: ``fabric.setup(torch.compile(model))`` compiles per block (said once)."""
        return _blocks.keeps_whole_model_compile(self._compile_kwargs, "FSDPStrategy")

    def _overrides_wrap_policy(self) -> bool:
        return type(self).configure_fsdp_auto_wrap_policy is not FSDPStrategy.configure_fsdp_auto_wrap_policy

    def _materialize_device(self) -> torch.device:
        return torch.device("cpu") if self._cpu_offload is not False else self.root_device

    def _mesh_shape(self) -> tuple[int, ...]:
        if isinstance(self._mesh_argument, DeviceMesh):
            return tuple(self._mesh_argument.shape)
        world = self.num_nodes * self.num_processes
        if self._plan.replicate_only:
            return (world, 1)
        if self._plan.hybrid:
            return (
                self._mesh_argument
                if self._mesh_argument is not None
                else (self.num_nodes, self.num_processes)
            )
        return (world,)

    def __repr__(self) -> str:
        return (
            f"FSDPStrategy(sharding_strategy={self._plan.name}, cpu_offload={self._cpu_offload!r}, "
            f"activation_checkpointing={self._checkpointing is not None}, "
            f"compile_blocks={self._compile_kwargs if self._compile_kwargs else self._compile_kwargs is not None}, "
            f"state_dict_type={'sharded' if self._sharded_checkpoints else 'full'}, precision={self._precision!r})"
        )


_CHECKPOINTING_NEEDS_POLICY = (
    "FSDPStrategy(activation_checkpointing=True) checkpoints the modules auto_wrap_policy selects, and there "
    "is no auto_wrap_policy. Pass auto_wrap_policy={Block} as well (your repeated layer class), or name the "
    "layers to checkpoint: activation_checkpointing_policy={Block}."
)


_COMPILE_NEEDS_POLICY = (
    "FSDPStrategy(compile_blocks=...) compiles each module auto_wrap_policy selects, and there is no "
    "auto_wrap_policy. Pass auto_wrap_policy={Block} as well (your repeated layer class), or compile the whole "
    "model instead: fabric.setup(torch.compile(model)) with compile_blocks=False."
)


def _take_spelling(kwargs: dict[str, Any], fully_shard_name: str, own_name: str, own_value: Any) -> Any:
    """``own_value``, or the value of the same setting given under ``fully_shard``'s name in ``kwargs``."""
    if fully_shard_name not in kwargs:
        return own_value
    if own_value is not None:
        raise ValueError(
            f"FSDPStrategy got both {own_name}= and {fully_shard_name}= (fully_shard's name for the same "
            "setting). Pass one."
        )
    return kwargs.pop(fully_shard_name)


def _check_mesh_argument(value: Any, plan: _options.ShardingPlan) -> tuple[int, int] | DeviceMesh | None:
    if value is None or isinstance(value, DeviceMesh):
        return value
    if not plan.hybrid or plan.replicate_only:
        raise ValueError(
            f"FSDPStrategy(device_mesh={value!r}) sets the (replicate, shard) shape of hybrid sharding; pass it "
            "with sharding_strategy='HYBRID_SHARD', or pass a DeviceMesh."
        )
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value)
    ):
        raise ValueError(
            f"FSDPStrategy(device_mesh={value!r}) must be a tuple of two positive sizes (replicate, shard), "
            "e.g. (num_nodes, devices_per_node), or a DeviceMesh."
        )
    return value


def _product(shape: tuple[int, ...]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result
