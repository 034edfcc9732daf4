"""Data x tensor x pipeline parallelism on one named device mesh, by a user's ``parallelize_fn`` (or FSDP2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy
from torch.distributed.tensor.parallel import ParallelStyle, parallelize_module
from torch.optim import Optimizer
from torch.utils.weak import WeakIdKeyDictionary

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launchers.elastic import StartMethod
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.utilities.rank_zero import warn_once
from fabric_core.wrappers import FabricModule
from fabric_fsdp import _blocks
from fabric_fsdp._pipeline import PipelineRunner, PipelineSplit, check_pipeline_options, keep_stage
from fabric_fsdp._sharded import ShardedStrategy
from fabric_fsdp._wrap import shard_module

__all__ = ["ModelParallelStrategy", "default_parallelize", "default_units", "resolve_parallel_sizes"]

ParallelizeFn = Callable[[nn.Module, DeviceMesh], nn.Module]


class ModelParallelStrategy(ShardedStrategy):
    """Your own parallelisation (DTensor tensor parallel, FSDP2, pipeline stages) on one named device mesh.

    The processes form a ``DeviceMesh`` with axes ``"data_parallel"`` (size
    ``data_parallel_size``) and ``"tensor_parallel"`` (size ``tensor_parallel_size``),
    preceded by ``"pipeline_parallel"`` under a pipeline, and with the data axis split
    into ``"data_replicate"`` x ``"data_shard"`` under hybrid sharding; ranks
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
    trained with FSDP2 over the data-parallel axis (`default_parallelize`): each
    child block gets its own ``fully_shard``, then the root. There is no tensor-parallel
    plan then, so ``"auto"`` sizes put every process on the data-parallel axis.

    The data loader is sharded over the data-parallel axis only: all processes of a
    tensor-parallel group see the same batch. Optimizers may be created before or after
    setup (see `setup_optimizer`), and ``fabric.init_module(empty_init=True)`` builds
    the model on the meta device so that only local shards are ever allocated.

    Args:
        accelerator: The accelerator; set by ``Fabric`` when omitted.
        checkpoint_io: How full (single-file) checkpoints are written.
        precision_plugin: The precision plugin (for parameter and reduction dtypes, pass a
            ``MixedPrecisionPolicy`` to ``fully_shard`` in ``parallelize_fn``).
        parallelize_fn: ``(model, device_mesh) -> model``; ``None``: `default_parallelize`.
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
            `FSDPStrategy` does with ``async_save=True``.
        data_parallel_replicate_size: How many replicas the data-parallel axis holds
            (hybrid sharding, HSDP): the axis is then split into ``"data_replicate"`` (this
            size) x ``"data_shard"`` (the rest); parameters are sharded within a replica
            and gradients all-reduced across replicas. ``device_mesh["data_parallel"]`` stays
            the whole axis (flattened), for the data loader and for a ``parallelize_fn``.
        context_parallel_size: Split each sequence over this many processes (ring attention
            of ``torch.distributed.tensor.experimental.context_parallel``; CUDA only). The
            mesh gains ``"context_parallel"`` between the data and tensor axes; FSDP2
            shards over data x context (``device_mesh["data_context"]``), and
            ``fabric.forward_backward`` shards the inputs and the target along dimension 1
            (the sequence) for each step. Not combined with a pipeline or with replicas yet.
        pipeline_parallel_size: The number of pipeline stages (1: no pipeline). The mesh
            becomes ``("pipeline_parallel", "data_parallel", "tensor_parallel")``, and each
            process keeps one stage of the model (see the guide's N-D parallelism page);
            train with ``loss = fabric.forward_backward(model, x, target=y, loss_fn=...)``.
        pipeline_split: Where the stages after the first begin: module names such as
            ``["layers.4"]`` (children of the model, or entries of an ``nn.Sequential`` /
            ``nn.ModuleList`` / ``nn.ModuleDict`` child), or a function
            ``(model, stage_index, num_stages) -> stage module``.
        pipeline_schedule: ``"1F1B"`` (the default: at most ``num_stages`` micro-batches of
            activations alive) or ``"GPipe"`` (all forwards, then all backwards).
        pipeline_microbatches: How many micro-batches each batch is split into; ``None``:
            the number of stages. The batch size must be divisible by it.
        tensor_parallel_plan: Without ``parallelize_fn``: a plan of
            ``torch.distributed.tensor.parallel.parallelize_module`` (module name or
            ``fnmatch`` pattern -> ``ColwiseParallel()``, ``RowwiseParallel()``, ...) that
            `default_parallelize` applies over the tensor-parallel axis before FSDP2
            (under a pipeline, each stage takes the entries of its own modules).
        activation_checkpointing: Without ``parallelize_fn``: ``True`` recomputes the
            activations of every block `default_units` finds, layer classes those
            layers instead; ``False``: none. With ``parallelize_fn``, call
            `fabric_fsdp.prepare_blocks` in it instead.
        compile_blocks: Without ``parallelize_fn``: compile each block on its own, after
            checkpointing and before ``fully_shard`` (``True``: torch.compile's defaults; a
            dict: ``torch.compile`` keywords). As with
            `FSDPStrategy`, it replaces a whole-model
            ``torch.compile`` given to ``fabric.setup`` (said once).

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
        data_parallel_replicate_size: int = 1,
        context_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        pipeline_split: PipelineSplit | None = None,
        pipeline_schedule: str = "1F1B",
        pipeline_microbatches: int | None = None,
        tensor_parallel_plan: dict[str, ParallelStyle] | None = None,
        activation_checkpointing: _blocks.LayerClasses = False,
        compile_blocks: bool | dict[str, Any] = False,
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
        check_pipeline_options(
            pipeline_parallel_size, pipeline_split, pipeline_schedule, pipeline_microbatches
        )
        self._pipeline_size = pipeline_parallel_size
        self._pipeline_split = pipeline_split
        self._pipeline_schedule = pipeline_schedule
        self._pipeline_microbatches = pipeline_microbatches or pipeline_parallel_size
        self._pipelines: dict[int, PipelineRunner] = {}
        self._outside_stage = WeakIdKeyDictionary()
        if tensor_parallel_plan is not None:
            if parallelize_fn is not None:
                raise ValueError(
                    "ModelParallelStrategy got both parallelize_fn and tensor_parallel_plan. Apply the plan in "
                    "parallelize_fn (parallelize_module(model, device_mesh['tensor_parallel'], plan)), or drop "
                    "parallelize_fn to let the default apply it."
                )
            if not isinstance(tensor_parallel_plan, dict) or not all(
                isinstance(key, str) and isinstance(style, ParallelStyle)
                for key, style in tensor_parallel_plan.items()
            ):
                raise TypeError(
                    f"ModelParallelStrategy(tensor_parallel_plan={tensor_parallel_plan!r}) must map module names to "
                    "parallel styles, e.g. {'attn.q': ColwiseParallel(), 'attn.out': RowwiseParallel()}."
                )
        self._tensor_parallel_plan = tensor_parallel_plan
        self._parallelize_fn = parallelize_fn
        self._block_options = _blocks.resolve_block_options(
            activation_checkpointing,
            compile_blocks,
            "ModelParallelStrategy",
            custom=parallelize_fn is not None,
        )
        self._requested_sizes = (data_parallel_size, tensor_parallel_size)
        if (
            isinstance(data_parallel_replicate_size, bool)
            or not isinstance(data_parallel_replicate_size, int)
            or data_parallel_replicate_size < 1
        ):
            raise ValueError(
                f"ModelParallelStrategy(data_parallel_replicate_size={data_parallel_replicate_size!r}) must be a "
                "positive integer (1: no replication, every data-parallel process holds a shard)."
            )
        self._replicas = data_parallel_replicate_size
        if (
            isinstance(context_parallel_size, bool)
            or not isinstance(context_parallel_size, int)
            or context_parallel_size < 1
        ):
            raise ValueError(
                f"ModelParallelStrategy(context_parallel_size={context_parallel_size!r}) must be a positive integer "
                "(1: every process holds whole sequences)."
            )
        if context_parallel_size > 1 and (pipeline_parallel_size > 1 or data_parallel_replicate_size > 1):
            raise ValueError(
                f"ModelParallelStrategy(context_parallel_size={context_parallel_size}) cannot be combined with "
                "pipeline_parallel_size or data_parallel_replicate_size above 1 yet. Combine context parallelism "
                "with data (sharded) and tensor parallelism only."
            )
        self._context_size = context_parallel_size
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
        splits_tensors = self._parallelize_fn is not None or self._tensor_parallel_plan is not None
        if not splits_tensors and tensor == "auto":
            tensor = 1 if data == "auto" else tensor
        if self._context_size > 1 and self.root_device.type != "cuda":
            raise ValueError(
                f"ModelParallelStrategy(context_parallel_size={self._context_size}) needs CUDA devices: torch's "
                f"ring attention runs on the CUDA kernels of scaled_dot_product_attention, and this run is on "
                f"{self.root_device.type}. Use context_parallel_size=1 here."
            )
        outer = self._pipeline_size * self._context_size
        if outer == 1:
            self._sizes = resolve_parallel_sizes(data, tensor, self.num_nodes, self.num_processes)
        else:
            world = self.num_nodes * self.num_processes
            if world % outer:
                given = "pipeline_parallel_size" if self._pipeline_size > 1 else "context_parallel_size"
                raise ValueError(
                    f"ModelParallelStrategy({given}={outer}) does not divide the {world} processes "
                    f"(devices x num_nodes). Pick a divisor of {world}, or change devices."
                )
            # The pipeline (or context) axis is set; data x tensor share what is left.
            self._sizes = resolve_parallel_sizes(data, tensor, 1, world // outer)
        if self._sizes[0] % self._replicas:
            raise ValueError(
                f"ModelParallelStrategy(data_parallel_replicate_size={self._replicas}) does not divide the "
                f"data-parallel size {self._sizes[0]}. Pick a divisor of {self._sizes[0]}, or set "
                "data_parallel_size to a multiple of it."
            )
        if not splits_tensors and self._sizes[1] > 1:
            warn_once(
                f"ModelParallelStrategy has a tensor-parallel axis of {self._sizes[1]} processes but no "
                "parallelize_fn or tensor_parallel_plan, so the default (FSDP over the data-parallel axis) makes "
                "those processes compute the same thing. Pass tensor_parallel_plan={...} (or parallelize_fn=...), "
                "or tensor_parallel_size=1."
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
    def context_parallel_size(self) -> int:
        """How many processes share each sequence (1: no context parallelism)."""
        return self._context_size

    @property
    def pipeline_parallel_size(self) -> int:
        """The number of pipeline stages (1: no pipeline)."""
        return self._pipeline_size

    @property
    def device_mesh(self) -> DeviceMesh:
        """The device mesh, built on first use: ``("data_parallel", "tensor_parallel")``.

        Under a pipeline it is ``("pipeline_parallel", "data_parallel", "tensor_parallel")``.

        Ranks are laid out row-major: the processes of a tensor-parallel group are
        consecutive, then those of a data-parallel group; a pipeline's stages are the
        farthest apart.
        """
        if self._device_mesh is None:
            data, tensor = self._resolved_sizes()
            shape: tuple[int, ...] = (data, tensor)
            names: tuple[str, ...] = ("data_parallel", "tensor_parallel")
            if self._replicas > 1:
                shape = (self._replicas, data // self._replicas, tensor)
                names = ("data_replicate", "data_shard", "tensor_parallel")
            if self._context_size > 1:
                shape = (data, self._context_size, tensor)
                names = ("data_parallel", "context_parallel", "tensor_parallel")
            if self._pipeline_size > 1:
                shape, names = (self._pipeline_size, *shape), ("pipeline_parallel", *names)
            mesh = init_device_mesh(self.root_device.type, shape, mesh_dim_names=names)
            if self._replicas > 1:
                mesh["data_replicate", "data_shard"]._flatten("data_parallel")
            if self._context_size > 1:
                mesh["data_parallel", "context_parallel"]._flatten("data_context")
            self._device_mesh = mesh
        return self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Shard data over the data-parallel axis: tensor-parallel peers read the same samples."""
        return {
            "num_replicas": self.data_parallel_size,
            "rank": (self.global_rank // (self.tensor_parallel_size * self._context_size))
            % self.data_parallel_size,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_pipelines"] = {}
        state["_outside_stage"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._outside_stage = WeakIdKeyDictionary()

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Re-point ``optimizer`` at the shards; under a pipeline, drop the parameters of other stages.

        The parameter groups stay (empty where a group's parameters all live on other
        stages), so learning-rate schedulers and the groups' hyperparameters keep their order.
        """
        if len(self._outside_stage):
            for group in optimizer.param_groups:
                group["params"][:] = [p for p in group["params"] if p not in self._outside_stage]
        return super().setup_optimizer(optimizer)

    # Same parameters as Strategy.forward_backward (the contract every strategy keeps); only the body is its own.
    def forward_backward(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: Any,
        loss_fn: Callable[..., torch.Tensor],
        backward: Callable[[torch.Tensor], None],
    ) -> torch.Tensor:
        """Under a pipeline, run the schedule over micro-batches; otherwise the plain step.

        Every stage returns the mean micro-batch loss (broadcast from the last stage).

        Raises:
            ValueError: The precision scales the loss (``16-mixed``): pipeline schedules run
                their own backward, which a loss scaler cannot reach.
        """
        if self._context_size > 1:
            with self._sequence_shards((*args, *kwargs.values(), target)):
                return super().forward_backward(module, args, kwargs, target, loss_fn, backward)
        runner = self._pipeline_for(module)
        if runner is None:
            return super().forward_backward(module, args, kwargs, target, loss_fn, backward)
        if getattr(self.precision, "scaler", None) is not None:
            raise ValueError(
                "A pipeline cannot train with a loss scaler (precision='16-mixed'): the schedule runs the backward "
                "passes itself. Use precision='bf16-mixed' or '32-true'."
            )
        args, kwargs = self.precision.convert_input((args, kwargs))
        return runner.step(args, kwargs, target, loss_fn, self.precision.forward_context())

    def _sequence_shards(self, values: tuple[Any, ...]) -> AbstractContextManager[None]:
        """Ring attention for the step, with every tensor of ``values`` sharded in place along dimension 1."""
        from torch.distributed.tensor.experimental import context_parallel

        buffers = [value for value in values if isinstance(value, torch.Tensor)]
        return context_parallel(
            self.device_mesh["context_parallel"],
            buffers=buffers,
            buffer_seq_dims=[1] * len(buffers),
            no_restore_buffers=set(buffers),
        )

    def _pipeline_for(self, module: nn.Module) -> PipelineRunner | None:
        if not self._pipelines:
            return None
        inner = module.module if isinstance(module, FabricModule) else module
        runner = self._pipelines.get(id(inner))
        if runner is None and len(self._pipelines) == 1:
            runner = next(iter(self._pipelines.values()))
        if runner is None:
            raise ValueError(
                "fabric.forward_backward() got a model that is not a pipeline stage set up by this strategy. "
                "Pass the model returned by fabric.setup()."
            )
        return runner

    def _clip_across(self) -> Any:
        return self.device_mesh["pipeline_parallel"].get_group() if self._pipeline_size > 1 else None

    def _parallelize(self, module: nn.Module) -> nn.Module:
        if self._pipeline_size > 1:
            return self._parallelize_stage(module)
        return self._parallelize_whole(module)

    def _parallelize_stage(self, module: nn.Module) -> nn.Module:
        assert self._pipeline_split is not None  # checked in __init__
        stage_index = self.global_rank // (self.data_parallel_size * self.tensor_parallel_size)
        before = list(module.parameters())
        stage = keep_stage(module, stage_index, self._pipeline_size, self._pipeline_split)
        kept = {id(p) for p in stage.parameters()}
        for parameter in before:
            if id(parameter) not in kept:
                self._outside_stage[parameter] = True
        stage = self._parallelize_whole(stage)
        self._pipelines[id(stage)] = PipelineRunner(
            stage,
            stage_index,
            self._pipeline_size,
            self.root_device,
            self.device_mesh["pipeline_parallel"].get_group(),
            self._pipeline_schedule,
            self._pipeline_microbatches,
        )
        return stage

    def _parallelize_whole(self, module: nn.Module) -> nn.Module:
        if self._parallelize_fn is None:
            return default_parallelize(
                module,
                self.device_mesh,
                tensor_parallel_plan=self._tensor_parallel_plan,
                activation_checkpointing=self._block_options.checkpoint,
                compile_blocks=self._block_options.compile_kwargs,
            )
        result = self._parallelize_fn(module, self.device_mesh)
        if not isinstance(result, nn.Module):
            raise TypeError(
                f"parallelize_fn must return the model, got {type(result).__name__}. End it with `return model`."
            )
        averaged = self.data_parallel_size * self._context_size
        if averaged > 1 and not any(isinstance(m, FSDPModule) for m in result.modules()):
            axis = "data_context" if self._context_size > 1 else "data_parallel"
            raise ValueError(
                f"The data-parallel (x context) axes have {averaged} processes, but parallelize_fn applied no "
                "fully_shard, so their gradients would never be averaged. Call "
                f"fully_shard(model, mesh=device_mesh[{axis!r}]) at the end of parallelize_fn."
            )
        return result

    def keep_whole_model_compile(self, compiled: nn.Module) -> bool:
        """``False`` with ``compile_blocks``: ``fabric.setup(torch.compile(model))`` compiles per block (said once)."""
        return _blocks.keeps_whole_model_compile(self._block_options.compile_kwargs, "ModelParallelStrategy")

    def _resolved_sizes(self) -> tuple[int, int]:
        if self._sizes is None:
            raise RuntimeError("ModelParallelStrategy has no mesh sizes yet; build it through Fabric.")
        return self._sizes

    def __repr__(self) -> str:
        return f"ModelParallelStrategy(sizes={self._sizes or self._requested_sizes}, precision={self._precision!r})"


def default_parallelize(
    model: nn.Module,
    device_mesh: DeviceMesh,
    *,
    tensor_parallel_plan: dict[str, ParallelStyle] | None = None,
    activation_checkpointing: _blocks.LayerClasses = False,
    compile_blocks: bool | dict[str, Any] | None = False,
) -> nn.Module:
    """What ``ModelParallelStrategy`` does without ``parallelize_fn``: (tensor parallel, then) FSDP2 per block.

    With ``tensor_parallel_plan``, ``parallelize_module`` first splits the planned layers
    over ``device_mesh["tensor_parallel"]`` (entries that name no module of ``model``, such
    as another pipeline stage's, are left out).

    Each child block of ``model`` gets its own ``fully_shard`` (children that hold
    parameters; the contents of ``nn.ModuleList`` / ``nn.ModuleDict`` containers count as
    children; blocks that share a parameter with another block, as tied embeddings do,
    are left to the root), then ``model`` itself, all on ``device_mesh["data_parallel"]``.
    So only one block's parameters are gathered at a time, as with
    ``FSDPStrategy(auto_wrap_policy=...)`` for the model's blocks. Before sharding, the
    blocks are checkpointed and compiled as `fabric_fsdp.prepare_blocks` does.
    """
    if tensor_parallel_plan:
        plan = {key: style for key, style in tensor_parallel_plan.items() if _names_a_module(model, key)}
        if plan:
            parallelize_module(model, device_mesh["tensor_parallel"], plan)
    blocks = default_units(model)
    if activation_checkpointing is not False or compile_blocks not in (False, None):
        _blocks.prepare_blocks(model, blocks, checkpoint=activation_checkpointing, compile=compile_blocks)
    units = {id(unit) for unit in blocks}
    return shard_module(
        model,
        mesh=_data_mesh(device_mesh),
        reshard_after_forward=True,
        wrap_predicate=lambda module, unclaimed: id(module) in units,
        mp_policy=MixedPrecisionPolicy(),
        offload_policy=OffloadPolicy(),
        forward_prefetch=False,
    )


def _names_a_module(model: nn.Module, key: str) -> bool:
    """Whether a plan key (dotted names, each may be an ``fnmatch`` pattern) matches a submodule of ``model``."""
    level = [model]
    for token in key.split("."):
        level = [child for module in level for name, child in module.named_children() if fnmatch(name, token)]
        if not level:
            return False
    return True


def _data_mesh(device_mesh: DeviceMesh) -> DeviceMesh:
    """The mesh ``fully_shard`` gets: 2-D ``(data_replicate, data_shard)`` for hybrid sharding, else the data axis."""
    names = device_mesh.mesh_dim_names or ()
    if "context_parallel" in names:
        return device_mesh["data_context"]
    if "data_replicate" in names:
        return device_mesh["data_replicate", "data_shard"]
    return device_mesh["data_parallel"]


def default_units(model: nn.Module) -> list[nn.Module]:
    """The child blocks `default_parallelize` shards one by one (see there), in registration order."""
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
