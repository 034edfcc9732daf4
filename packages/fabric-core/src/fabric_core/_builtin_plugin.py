"""fabric-core's own registrations, made through the same hooks a plugin uses."""

from __future__ import annotations

from fabric_core.hookspecs import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)


# One registry.register call per name, written out so a reader sees every name where it is made:
# the repeated shape is the registration API (a table of calls), not copied logic.
@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register the strategies that ship with fabric-core."""
    registry.register(
        "single_device",
        "fabric_core.strategies.single_device:SingleDeviceStrategy",
        description="One process on one device (what 'auto' picks for a single device)",
    )
    registry.register(
        "dp",
        "fabric_core.strategies.dp:DataParallelStrategy",
        description="torch.nn.DataParallel: one process, the batch split over several CUDA devices",
    )


@hookimpl
def fabric_register_accelerators(registry: Registry) -> None:
    """Register the cpu, cuda (alias gpu) and mps accelerators."""
    registry.register("cpu", "fabric_core.accelerators.cpu:CPUAccelerator", description="The CPU")
    registry.register(
        "cuda", "fabric_core.accelerators.cuda:CUDAAccelerator", description="NVIDIA GPUs (CUDA)"
    )
    registry.register("gpu", "fabric_core.accelerators.cuda:CUDAAccelerator", description="Alias of 'cuda'")
    registry.register(
        "mps", "fabric_core.accelerators.mps:MPSAccelerator", description="Apple silicon GPUs (MPS)"
    )


@hookimpl
def fabric_register_environments(registry: Registry) -> None:
    """Register the cluster environments that ship with fabric-core."""
    registry.register(
        "torchelastic",
        "fabric_core.environments.torchelastic:TorchElasticEnvironment",
        description="Processes started by torchrun / the torch elastic agent",
    )
    registry.register(
        "kubeflow",
        "fabric_core.environments.kubeflow:KubeflowEnvironment",
        description="A Kubeflow PyTorchJob: one process per pod",
    )
    registry.register(
        "lsf",
        "fabric_core.environments.lsf:LSFEnvironment",
        description="Tasks started by jsrun in an IBM Spectrum LSF job",
    )
    registry.register(
        "mpi",
        "fabric_core.environments.mpi:MPIEnvironment",
        description="Processes started by mpirun / mpiexec (Open MPI, MPICH, Intel MPI)",
    )
    registry.register(
        "slurm",
        "fabric_core.environments.slurm:SLURMEnvironment",
        description="Tasks started by srun in a SLURM batch job",
    )
    registry.register(
        "local",
        "fabric_core.environments.local:LocalEnvironment",
        description="Processes on this machine started by fabric (or a single process)",
    )


@hookimpl
def fabric_register_checkpoint_formats(registry: Registry) -> None:
    """Register the torch.distributed.checkpoint (DCP) directory format."""
    registry.register(
        "dcp",
        "fabric_core.io.formats:DCPFormat",
        description="A torch.distributed.checkpoint directory (sharded, any world size)",
    )


@hookimpl
def fabric_register_precisions(registry: Registry) -> None:
    """Register the precision strings every strategy understands."""
    base = "fabric_core.precision"
    registry.register("32-true", f"{base}.precision:Precision", description="float32 weights and compute")
    registry.register("64-true", f"{base}.double:DoublePrecision", description="float64 weights and compute")
    registry.register(
        "16-true", f"{base}.half:HalfPrecision", description="float16 weights and compute", dtype="float16"
    )
    registry.register(
        "bf16-true",
        f"{base}.half:HalfPrecision",
        description="bfloat16 weights and compute",
        dtype="bfloat16",
    )
    registry.register(
        "16-mixed",
        f"{base}.amp:MixedPrecision",
        description="float32 weights, float16 autocast compute, gradient scaling",
        dtype="float16",
    )
    registry.register(
        "bf16-mixed",
        f"{base}.amp:MixedPrecision",
        description="float32 weights, bfloat16 autocast compute",
        dtype="bfloat16",
    )
