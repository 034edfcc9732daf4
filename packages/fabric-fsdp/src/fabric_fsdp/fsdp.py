"""Fully sharded data parallel training on FSDP2 (``torch.distributed.fsdp.fully_shard``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

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
from fabric_core.strategies.parallel import DEFAULT_TIMEOUT
from fabric_fsdp import _options
from fabric_fsdp._params import broadcast_module_states, has_meta_tensors
from fabric_fsdp._sharded import ShardedStrategy
from fabric_fsdp._wrap import apply_activation_checkpointing, shard_module
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

    FSDP1 arguments kept for compatibility, and what they do on FSDP2:

    - ``sharding_strategy``: ``FULL_SHARD`` (reshard after forward), ``SHARD_GRAD_OP``
      (keep gathered parameters from forward to backward), ``HYBRID_SHARD`` (2-D mesh:
      shard within a node, replicate across nodes; ``device_mesh`` sets the shape),
      ``NO_SHARD`` (every process keeps everything; gradients are all-reduced).
    - ``cpu_offload``: FSDP1's ``CPUOffload(offload_params=True)`` means ``True``: shards,
      gradients and the optimizer step live in CPU memory (pinned only on CUDA).
    - ``mixed_precision``: FSDP1's ``MixedPrecision`` maps ``param_dtype``,
      ``reduce_dtype`` and ``cast_forward_inputs``; ``buffer_dtype`` casts buffers once;
      ``keep_low_precision_grads=True`` is refused.
    - ``auto_wrap_policy``: FSDP1's ``ModuleWrapPolicy``, ``CustomPolicy`` and
      ``(module, recurse, nonwrapped_numel)`` callables (size- and transformer-based
      policies) select the modules that get their own ``fully_shard``.
    - ``use_orig_params``: FSDP2 always works on the original parameters; ``True`` is
      accepted, ``False`` (flat parameters) is refused.
    - ``limit_all_gathers``: accepted and ignored; FSDP2 bounds the memory of in-flight
      all-gathers itself, without FSDP1's CPU-blocking rate limiter.
    - ``sync_module_states``: ``True`` broadcasts rank 0's parameters and buffers before
      sharding (FSDP2 itself takes each shard from the local copy of each process).
    - ``forward_prefetch``: ``True`` makes each wrapped module start the next one's
      all-gather before its own forward (explicit prefetching in FSDP2).

    Args:
        accelerator: The accelerator; set by ``Fabric`` when omitted.
        parallel_devices: One device per process on this node; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from; detected when omitted.
        checkpoint_io: How full (single-file) checkpoints are written.
        precision: The precision plugin; ``Fabric(precision="bf16-mixed")`` gives
            :class:`~fabric_fsdp.FSDPPrecision`.
        process_group_backend: ``"gloo"`` (CPU default), ``"nccl"`` (CUDA default), ...
        timeout: How long collectives wait for the other processes.
        cpu_offload: ``True``, an FSDP2 ``CPUOffloadPolicy``, or FSDP1's ``CPUOffload``.
        mixed_precision: An FSDP2 ``MixedPrecisionPolicy`` or FSDP1's ``MixedPrecision``;
            wins over the policy a precision string implies.
        auto_wrap_policy: Which submodules get their own ``fully_shard``: a set of layer
            classes, a callable ``module -> bool``, or an FSDP1 policy.
        activation_checkpointing: Layer class(es) whose activations are recomputed in backward.
        activation_checkpointing_policy: The same as a policy (same forms as ``auto_wrap_policy``).
        sharding_strategy: ``"FULL_SHARD"`` (default), ``"SHARD_GRAD_OP"``, ``"HYBRID_SHARD"``,
            ``"NO_SHARD"``, or ``torch.distributed.fsdp.ShardingStrategy``.
        state_dict_type: ``"sharded"`` (default; a DCP directory, loadable at any world
            size) or ``"full"`` (one file written by rank 0, loadable by plain ``torch.load``).
        device_mesh: ``(replicate, shard)`` sizes for ``HYBRID_SHARD`` (default: nodes x
            processes per node), or a ready ``DeviceMesh``.
        use_orig_params: FSDP1 compatibility, see above.
        limit_all_gathers: FSDP1 compatibility, see above.
        sync_module_states: FSDP1 compatibility, see above.
        forward_prefetch: FSDP1 compatibility, see above.
        precision_plugin: Another name for ``precision`` (older spelling).
        start_method: ``"popen"`` (re-run the script), ``"spawn"`` or ``"fork"``.

    Raises:
        ValueError, TypeError: An argument has a value FSDP2 cannot honour; the message
            says what to pass instead.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = DEFAULT_TIMEOUT,
        cpu_offload: Any = None,
        mixed_precision: Any = None,
        auto_wrap_policy: Any = None,
        activation_checkpointing: Any = None,
        activation_checkpointing_policy: Any = None,
        sharding_strategy: Any = "FULL_SHARD",
        state_dict_type: Literal["full", "sharded"] = "sharded",
        device_mesh: tuple[int, int] | DeviceMesh | None = None,
        use_orig_params: bool | None = None,
        limit_all_gathers: bool | None = None,
        sync_module_states: bool | None = None,
        forward_prefetch: bool | None = None,
        precision_plugin: Precision | None = None,
        start_method: StartMethod = "popen",
    ) -> None:
        if precision is not None and precision_plugin is not None:
            raise ValueError("Pass the precision plugin as precision= or precision_plugin=, not both.")
        _options.check_compatibility_arguments(
            use_orig_params, limit_all_gathers, sync_module_states, forward_prefetch
        )
        self._plan = _options.resolve_sharding_strategy(sharding_strategy)
        self._cpu_offload = _options.resolve_cpu_offload(cpu_offload)
        self._mixed_precision = _options.resolve_mixed_precision(mixed_precision)
        self._wrap_predicate = _options.resolve_module_policy(auto_wrap_policy, "auto_wrap_policy")
        self._checkpoint_predicate = _options.resolve_activation_checkpointing(
            activation_checkpointing, activation_checkpointing_policy
        )
        self._sharded_checkpoints = _options.resolve_state_dict_type(state_dict_type) == "sharded"
        self._mesh_argument = _check_mesh_argument(device_mesh, self._plan)
        self._sync_module_states = bool(sync_module_states)
        self._forward_prefetch = bool(forward_prefetch)
        self._device_mesh: DeviceMesh | None = None
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision=precision if precision is not None else precision_plugin,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
        )

    @classmethod
    def precision_for(cls, precision: str, device_type: str) -> Precision:
        """``16-mixed`` and ``bf16-mixed`` give :class:`~fabric_fsdp.FSDPPrecision`; other strings the core plugins."""
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

    def _parallelize(self, module: nn.Module) -> nn.Module:
        buffer_dtype = self._mixed_precision.buffer_dtype if self._mixed_precision else None
        if buffer_dtype is not None:
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    buffer.data = buffer.data.to(buffer_dtype)
        if self._sync_module_states and not has_meta_tensors(module):
            broadcast_module_states(module)
        if self._checkpoint_predicate is not None:
            apply_activation_checkpointing(module, self._checkpoint_predicate)
        return shard_module(
            module,
            mesh=self.device_mesh,
            reshard_after_forward=self._plan.reshard_after_forward,
            wrap_predicate=self._wrap_predicate,
            mp_policy=self.mp_policy,
            offload_policy=_options.offload_policy_for(self._cpu_offload, self.root_device.type),
            forward_prefetch=self._forward_prefetch,
        )

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
            f"state_dict_type={'sharded' if self._sharded_checkpoints else 'full'}, precision={self._precision!r})"
        )


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
