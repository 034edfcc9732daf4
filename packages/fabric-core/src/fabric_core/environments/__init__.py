"""Cluster environments: where a process learns its rank, the world size and the main address."""

from fabric_core._registries import ENVIRONMENT_REGISTRY, EnvironmentRegistry
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.environments.detect import detect_environment
from fabric_core.environments.local import LocalEnvironment
from fabric_core.environments.torchelastic import TorchElasticEnvironment

__all__ = [
    "ENVIRONMENT_REGISTRY",
    "ClusterEnvironment",
    "EnvironmentRegistry",
    "LocalEnvironment",
    "TorchElasticEnvironment",
    "detect_environment",
]
