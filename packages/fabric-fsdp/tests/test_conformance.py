"""fabric-fsdp keeps the Strategy contract: fabric-core's conformance kit, on 2 CPU processes (gloo).

Every sharding strategy of ``fsdp`` and both kinds of ``model_parallel`` (FSDP2 over the
data-parallel axis, and a tensor-parallel plan) run every check with no skips. They share
one launch (``launch_group``): each worker runs one strategy's checks after the other, so
the processes and torch are started once; each class still reports its own tests.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from fabric_core.testing import StrategyConformanceSuite
from fabric_fsdp import ModelParallelStrategy


class TestFSDPFullShardConformance(StrategyConformanceSuite):
    """``fsdp`` by name (``FULL_SHARD``), model and optimizer set up together (re-pointed at the shards)."""

    strategy = "fsdp"
    tolerance = 1e-5
    start_method = "fork"  # the workers inherit the imported torch: seconds faster than spawn
    launch_group = "fabric-fsdp"


class TestFSDPShardGradOpConformance(TestFSDPFullShardConformance):
    """``SHARD_GRAD_OP``: gathered parameters stay from forward to backward; the optimizer built after setup."""

    init_args = {"sharding_strategy": "SHARD_GRAD_OP"}
    setup = "separately"


class TestFSDPNoShardConformance(TestFSDPFullShardConformance):
    """``NO_SHARD``: a (2, 1) replicate x shard mesh, so every process keeps everything; full checkpoints."""

    init_args = {"sharding_strategy": "NO_SHARD", "state_dict_type": "full"}


class TestFSDPHybridShardConformance(TestFSDPFullShardConformance):
    """``HYBRID_SHARD`` on one node: the default (1, 2) mesh shards within the node."""

    init_args = {"sharding_strategy": "HYBRID_SHARD"}


class TestModelParallelConformance(TestFSDPFullShardConformance):
    """``model_parallel`` by name: no ``parallelize_fn``, so FSDP2 over a data-parallel axis of 2."""

    strategy = "model_parallel"


def tensor_parallel_plan(model: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
    """Split the kit's MLP over the tensor-parallel axis: the first layer by columns, the last by rows."""
    return parallelize_module(
        model, device_mesh["tensor_parallel"], {"0": ColwiseParallel(), "2": RowwiseParallel()}
    )


def tensor_parallel() -> ModelParallelStrategy:
    """``ModelParallelStrategy`` with a tensor-parallel axis of 2 (module level, so workers can import it)."""
    return ModelParallelStrategy(
        parallelize_fn=tensor_parallel_plan, data_parallel_size=1, tensor_parallel_size=2
    )


class TestModelParallelTensorParallelConformance(TestFSDPFullShardConformance):
    """``model_parallel`` with a tensor-parallel plan: both processes see the same data and hold half of each layer."""

    strategy = tensor_parallel
