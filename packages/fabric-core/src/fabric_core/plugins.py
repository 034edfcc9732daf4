"""Discovery of plugin distributions through the ``fabric`` entry-point group.

Discovery runs once, the first time any registry is asked for a name (never on
``import fabric_core``). Each plugin is loaded and registered on its own: a plugin that
fails to import, declares an incompatible API version, or registers a name that is taken
is recorded with the cause, its partial registrations are rolled back, and the other
plugins keep working. ``fabric plugins`` prints the records.

Two environment variables select plugins, by entry-point or distribution name:

- ``FABRIC_DISABLE_PLUGINS=ddp,fabric-xla`` skips those plugins.
- ``FABRIC_LOAD_PLUGINS=ddp`` loads only those plugins (an allow-list).

For code written against ``lightning.fabric.plugins``, the precision, checkpoint I/O and
cluster environment classes can be imported from here too (loaded on first access).
"""

from __future__ import annotations

from typing import Final

from fabric_core._discovery import ALLOW_VARIABLE, DISABLE_VARIABLE, PluginInfo, PluginStatus
from fabric_core._registries import PLUGIN_LOADER
from fabric_core.lazy import lazy_exports

__all__ = [
    "ALLOW_VARIABLE",
    "DISABLE_VARIABLE",
    "PluginInfo",
    "PluginStatus",
    "discovery_seconds",
    "ensure_plugins_loaded",
    "plugin_infos",
    "reset_plugins",
]


def ensure_plugins_loaded() -> None:
    """Discover and register every installed plugin, once per process."""
    PLUGIN_LOADER.ensure_loaded()


def plugin_infos() -> list[PluginInfo]:
    """The record of every plugin found, the built-in core plugin first."""
    PLUGIN_LOADER.ensure_loaded()
    return list(PLUGIN_LOADER.infos)


def discovery_seconds() -> float:
    """How long discovery took in this process."""
    PLUGIN_LOADER.ensure_loaded()
    return PLUGIN_LOADER.seconds


def reset_plugins() -> None:
    """Forget every registration and discover the plugins again on next use (for tests)."""
    PLUGIN_LOADER.reset()


_PLUGIN_CLASSES: Final = {
    "Precision": "fabric_core.precision.precision",
    "MixedPrecision": "fabric_core.precision.amp",
    "HalfPrecision": "fabric_core.precision.half",
    "DoublePrecision": "fabric_core.precision.double",
    "CheckpointIO": "fabric_core.io.checkpoint_io",
    "TorchCheckpointIO": "fabric_core.io.checkpoint_io",
    "ClusterEnvironment": "fabric_core.environments.cluster_environment",
    "LightningEnvironment": "fabric_core.environments.local:LocalEnvironment",
    "TorchElasticEnvironment": "fabric_core.environments.torchelastic",
    "SLURMEnvironment": "fabric_core.environments.slurm",
    "KubeflowEnvironment": "fabric_core.environments.kubeflow",
    "LSFEnvironment": "fabric_core.environments.lsf",
    "MPIEnvironment": "fabric_core.environments.mpi",
    "FSDPPrecision": "fabric_fsdp.precision",
    "DeepSpeedPrecision": "fabric_deepspeed.precision",
}
__getattr__, __dir__ = lazy_exports(
    __name__,
    _PLUGIN_CLASSES,
    {"FSDPPrecision": "fabric-fsdp", "DeepSpeedPrecision": "fabric-deepspeed"},
)
