"""Cluster environments: where a process learns its rank, the world size and the main address."""

from fabric_core._registries import ENVIRONMENT_REGISTRY, EnvironmentRegistry
from fabric_core.environments._hostlist import expand_hostlist
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.environments.detect import detect_environment
from fabric_core.environments.kubeflow import KubeflowEnvironment
from fabric_core.environments.local import LocalEnvironment
from fabric_core.environments.lsf import LSFEnvironment
from fabric_core.environments.mpi import MPIEnvironment
from fabric_core.environments.slurm import SLURMEnvironment, register_requeue_handler, requeue_job
from fabric_core.environments.torchelastic import TorchElasticEnvironment

__all__ = [
    "ENVIRONMENT_REGISTRY",
    "ClusterEnvironment",
    "EnvironmentRegistry",
    "KubeflowEnvironment",
    "LSFEnvironment",
    "LocalEnvironment",
    "MPIEnvironment",
    "SLURMEnvironment",
    "TorchElasticEnvironment",
    "detect_environment",
    "expand_hostlist",
    "register_requeue_handler",
    "requeue_job",
]
