"""Tensor parallel x fully sharded data parallel on a 2-D device mesh, by a user's ``parallelize_fn`` (or FSDP2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launchers.elastic import StartMethod
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.utilities.rank_zero import warn_once
from fabric_fsdp._sharded import ShardedStrategy
from fabric_fsdp._wrap import shard_module

__all__ = ["ModelParallelStrategy", "default_parallelize", "default_units", "resolve_parallel_sizes"]

ParallelizeFn = Callable[[nn.Module, DeviceMesh], nn.Module]


class ModelParallelStrategy(ShardedStrategy):
    """Your own parallelisation (DTensor tensor parallel, FSDP2) on a data x tensor device mesh.

    The processes form a 2-D ``DeviceMesh`` with axes ``"data_parallel"`` (size
    ``data_parallel_size``) and ``"tensor_parallel"`` (size ``tensor_parallel_size``); ranks
    are laid out row-major, so the processes of one tensor-parallel group are consecutive
    (on one node when the tensor-parallel size is the number of devices per node, the
    default). ``fabric.setup`` calls ``parallelize_fn(model, device_mesh)``, which typically
    applies ``parallelize_module(model, device_mesh["tensor_parallel"], plan)`` and then
    ``fully_shard(..., mesh=device_mesh["data_parallel"])``:

    - tensor parallel splits the weights of a layer across the processes of a
      tensor-parallel group, which exchange activations in forward and backward
      (all-gather / reduce-scatter / all-reduce, by plan);
    - FSDP2 shards what remains across the data-parallel axis and reduce-scatters gradients
      over it.

    Without ``parallelize_fn`` (e.g. ``Fabric(strategy="model_parallel")``) the model is
    trained with FSDP2 over the data-parallel axis (:func:`default_parallelize`): each
    child block gets its own ``fully_shard``, then the root. There is no tensor-parallel
    plan then, so ``"auto"`` sizes put every process on the data-parallel axis.

    The data loader is sharded over the data-parallel axis only: all processes of a
    tensor-parallel group see the same batch. Optimizers may be created before or after
    setup (see :meth:`setup_optimizer`), and ``fabric.init_module(empty_init=True)`` builds
    the model on the meta device so that only local shards are ever allocated.

    Args:
        accelerator: The accelerator; set by ``Fabric`` when omitted.
        checkpoint_io: How full (single-file) checkpoints are written.
        precision_plugin: The precision plugin (for parameter and reduction dtypes, pass a
            ``MixedPrecisionPolicy`` to ``fully_shard`` in ``parallelize_fn``).
        parallelize_fn: ``(model, device_mesh) -> model``; ``None``: :func:`default_parallelize`.
        data_parallel_size: The size of the data-parallel axis; ``"auto"``: the number of
            nodes (every process without ``parallelize_fn``), or whatever the
            tensor-parallel size leaves.
        tensor_parallel_size: The size of the tensor-parallel axis; ``"auto"``: the devices
            per node (1 without ``parallelize_fn``), or whatever the data-parallel size leaves.
        save_distributed_checkpoint: ``True``: ``fabric.save`` writes a sharded DCP directory
            (loadable at any world size); ``False``: one full file from rank 0.
        parallel_devices: One device per process on this node; set by ``Fabric`` when omitted.
        cluster_environment: Where ranks come from; detected when omitted.
        process_group_backend: ``"gloo"``, ``"nccl"``, ...
        timeout: How long collectives wait for the other processes (``None``: 5 minutes on
            gloo, so a skipped collective surfaces quickly; torch's default otherwise).
        start_method: ``"popen"`` (re-run the script), ``"spawn"`` or ``"fork"``.
        precision: Lightning Fabric's name for ``precision_plugin``.
        async_save: Write sharded checkpoints in the background, as
            :class:`~fabric_fsdp.FSDPStrategy` does with ``async_save=True``.

    Everything after ``precision_plugin`` is keyword-only (the seed's order).

    Raises:
        TypeError: ``parallelize_fn`` is not callable, or a function was passed as the
            first positional argument (that is ``accelerator``).
        ValueError: A mesh size is neither ``"auto"`` nor a positive integer.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        *,
        parallelize_fn: ParallelizeFn | None = None,
        data_parallel_size: int | str = "auto",
        tensor_parallel_size: int | str = "auto",
        save_distributed_checkpoint: bool = True,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        start_method: StartMethod = "popen",
        precision: Precision | None = None,
        async_save: bool = False,
    ) -> None:
        if accelerator is not None and not isinstance(accelerator, Accelerator) and callable(accelerator):
            raise TypeError(
                f"ModelParallelStrategy({getattr(accelerator, '__name__', accelerator)!r}) got a function as its "
                "first positional argument, which is accelerator. Pass the function by name: "
                "ModelParallelStrategy(parallelize_fn=...)."
            )
        if parallelize_fn is not None and not callable(parallelize_fn):
            raise TypeError(f"ModelParallelStrategy(parallelize_fn={parallelize_fn!r}) must be a function.")
        for name, size in (
            ("data_parallel_size", data_parallel_size),
            ("tensor_parallel_size", tensor_parallel_size),
        ):
            if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(
                    f"ModelParallelStrategy({name}={size!r}) must be 'auto' or a positive integer."
                )
        self._parallelize_fn = parallelize_fn
        self._requested_sizes = (data_parallel_size, tensor_parallel_size)
        self._sizes: tuple[int, int] | None = None
        self._sharded_checkpoints = bool(save_distributed_checkpoint)
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

    def configure(self, config: StrategyConfig) -> None:
        """Adopt devices and nodes and fix the mesh sizes.

        Without ``parallelize_fn``, ``"auto"`` sizes give every process to the
        data-parallel axis; a tensor-parallel size above 1 is kept (its processes compute
        the same thing), with a warning.

        Raises:
            ValueError: The sizes do not multiply to the number of processes.
        """
        super().configure(config)
        data, tensor = self._requested_sizes
        if self._parallelize_fn is None and tensor == "auto":
            tensor = 1 if data == "auto" else tensor
        self._sizes = resolve_parallel_sizes(data, tensor, self.num_nodes, self.num_processes)
        if self._parallelize_fn is None and self._sizes[1] > 1:
            warn_once(
                f"ModelParallelStrategy has a tensor-parallel axis of {self._sizes[1]} processes but no "
                "parallelize_fn, so the default (FSDP over the data-parallel axis) makes those processes compute "
                "the same thing. Pass parallelize_fn=... with a tensor-parallel plan, or tensor_parallel_size=1."
            )

    @property
    def data_parallel_size(self) -> int:
        """The size of the data-parallel mesh axis."""
        return self._resolved_sizes()[0]

    @property
    def tensor_parallel_size(self) -> int:
        """The size of the tensor-parallel mesh axis."""
        return self._resolved_sizes()[1]

    @property
    def device_mesh(self) -> DeviceMesh:
        """The 2-D mesh ``("data_parallel", "tensor_parallel")``, built on first use."""
        if self._device_mesh is None:
            self._device_mesh = init_device_mesh(
                self.root_device.type,
                self._resolved_sizes(),
                mesh_dim_names=("data_parallel", "tensor_parallel"),
            )
        return self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Shard data over the data-parallel axis: tensor-parallel peers read the same samples."""
        return {
            "num_replicas": self.data_parallel_size,
            "rank": self.global_rank // self.tensor_parallel_size,
        }

    def _parallelize(self, module: nn.Module) -> nn.Module:
        if self._parallelize_fn is None:
            return default_parallelize(module, self.device_mesh)
        result = self._parallelize_fn(module, self.device_mesh)
        if not isinstance(result, nn.Module):
            raise TypeError(
                f"parallelize_fn must return the model, got {type(result).__name__}. End it with `return model`."
            )
        if self.data_parallel_size > 1 and not any(isinstance(m, FSDPModule) for m in result.modules()):
            raise ValueError(
                f"The data-parallel axis has {self.data_parallel_size} processes, but parallelize_fn applied no "
                "fully_shard, so their gradients would never be averaged. Call "
                "fully_shard(model, mesh=device_mesh['data_parallel']) at the end of parallelize_fn."
            )
        return result

    def _resolved_sizes(self) -> tuple[int, int]:
        if self._sizes is None:
            raise RuntimeError("ModelParallelStrategy has no mesh sizes yet; build it through Fabric.")
        return self._sizes

    def __repr__(self) -> str:
        return f"ModelParallelStrategy(sizes={self._sizes or self._requested_sizes}, precision={self._precision!r})"


def default_parallelize(model: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
    """What ``ModelParallelStrategy`` does without ``parallelize_fn``: FSDP2 over the data-parallel axis.

    Each child block of ``model`` gets its own ``fully_shard`` (children that hold
    parameters; the contents of ``nn.ModuleList`` / ``nn.ModuleDict`` containers count as
    children; blocks that share a parameter with another block, as tied embeddings do,
    are left to the root), then ``model`` itself, all on ``device_mesh["data_parallel"]``.
    So only one block's parameters are gathered at a time, as with
    ``FSDPStrategy(auto_wrap_policy=...)`` for the model's blocks.
    """
    units = {id(unit) for unit in default_units(model)}
    return shard_module(
        model,
        mesh=device_mesh["data_parallel"],
        reshard_after_forward=True,
        wrap_predicate=lambda module, unclaimed: id(module) in units,
        mp_policy=MixedPrecisionPolicy(),
        offload_policy=OffloadPolicy(),
        forward_prefetch=False,
    )


def default_units(model: nn.Module) -> list[nn.Module]:
    """The child blocks :func:`default_parallelize` shards one by one (see there), in registration order."""
    candidates: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                visit(child)
            elif next(child.parameters(), None) is not None:
                candidates.append(child)

    visit(model)
    owners = Counter(id(p) for p in model.parameters(recurse=False))
    owners.update(id(p) for unit in candidates for p in unit.parameters())
    return [unit for unit in candidates if all(owners[id(p)] == 1 for p in unit.parameters())]


def resolve_parallel_sizes(
    data_parallel_size: int | str, tensor_parallel_size: int | str, num_nodes: int, devices_per_node: int
) -> tuple[int, int]:
    """``(data, tensor)`` sizes whose product is ``num_nodes * devices_per_node``.

    ``"auto"`` for both gives ``(num_nodes, devices_per_node)``: tensor parallelism inside
    a node, where links are fast. One ``"auto"`` takes what the other size leaves.

    Raises:
        ValueError: The sizes do not divide or multiply to the number of processes.
    """
    world = num_nodes * devices_per_node
    data, tensor = data_parallel_size, tensor_parallel_size
    call = f"ModelParallelStrategy(data_parallel_size={data!r}, tensor_parallel_size={tensor!r})"
    if isinstance(data, int) and isinstance(tensor, int):
        if data * tensor != world:
            raise ValueError(
                f"{call} needs {data * tensor} processes, but Fabric runs {world} (devices x num_nodes). "
                f"Make the product {world}, or pass 'auto' for one of them."
            )
        return data, tensor
    given = data if isinstance(data, int) else tensor if isinstance(tensor, int) else None
    if given is None:
        return num_nodes, devices_per_node
    if world % given:
        raise ValueError(
            f"{call}: {given} does not divide the {world} processes (devices x num_nodes). "
            f"Pick a divisor of {world}."
        )
    return (given, world // given) if isinstance(data, int) else (world // given, given)
