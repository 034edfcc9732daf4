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

import os
import re
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Final, Literal

import pluggy

from fabric_core import hookspecs
from fabric_core._lazy import lazy_exports
from fabric_core._registries import ALL_REGISTRIES
from fabric_core.hookspecs import ENTRY_POINT_GROUP, PLUGIN_API_VERSION, PROJECT_NAME
from fabric_core.registry import Registry

__all__ = ["PluginInfo", "PluginStatus", "ensure_plugins_loaded", "plugin_infos", "reset_plugins"]

PluginStatus = Literal["loaded", "failed", "disabled", "incompatible"]

DISABLE_VARIABLE: Final = "FABRIC_DISABLE_PLUGINS"
ALLOW_VARIABLE: Final = "FABRIC_LOAD_PLUGINS"
BUILTIN_NAME: Final = "core"


@dataclass
class PluginInfo:
    """What happened to one plugin during discovery.

    Attributes:
        name: The entry-point name (``"ddp"``).
        module: The plugin module the entry point names (``"fabric_ddp.plugin"``).
        distribution: The distribution that declared the entry point (``"fabric-ddp"``).
        version: That distribution's version.
        status: ``"loaded"``, ``"failed"``, ``"disabled"`` or ``"incompatible"``.
        error: Why the plugin is not loaded, empty when it is.
        hooks: The hooks the plugin implements.
        registered: For each registry (``"strategies"``, ...), the names the plugin registered.
        api_versions: The plugin API versions the module declares in ``FABRIC_PLUGIN_API``
            (empty when it declares none, or was not imported).
        rolled_back: For a plugin that failed part-way, the names it had registered before
            the failure; they were removed again and are not available.
    """

    name: str
    module: str
    distribution: str
    version: str
    status: PluginStatus = "loaded"
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    api_versions: list[int] = field(default_factory=list)
    rolled_back: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of this record."""
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": list(self.hooks),
            "registered": {kind: list(names) for kind, names in self.registered.items()},
            "api_versions": list(self.api_versions),
            "rolled_back": {kind: list(names) for kind, names in self.rolled_back.items()},
        }


class _PluginLoader:
    def __init__(self) -> None:
        self.infos: list[PluginInfo] = []
        self.seconds = 0.0
        self._done = False
        self._lock = threading.RLock()

    def ensure_loaded(self) -> None:
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            start = time.perf_counter()
            for registry in ALL_REGISTRIES.values():
                registry._discovered = True
            manager = pluggy.PluginManager(PROJECT_NAME)
            manager.add_hookspecs(hookspecs)
            from fabric_core import _builtin_plugin

            builtin = PluginInfo(BUILTIN_NAME, _builtin_plugin.__name__, "fabric-core", _core_version())
            self._register(manager, builtin, _builtin_plugin)
            disabled = _name_set(os.environ.get(DISABLE_VARIABLE, ""))
            allowed = _name_set(os.environ.get(ALLOW_VARIABLE, "")) or None
            for entry_point in entry_points(group=ENTRY_POINT_GROUP):
                info = _info_for(entry_point)
                # Covers names a module registers while it is imported, too: a plugin that does
                # not load leaves nothing behind.
                snapshot = _snapshot()
                module = self._import(entry_point, info, disabled, allowed)
                if module is not None:
                    self._register(manager, info, module)
                if info.status != "loaded":
                    info.rolled_back = _restore(snapshot)
                    info.registered.clear()
                self.infos.append(info)
            self.infos.insert(0, builtin)
            self.seconds = time.perf_counter() - start
            self._done = True

    def _import(
        self, entry_point: EntryPoint, info: PluginInfo, disabled: set[str], allowed: set[str] | None
    ) -> ModuleType | None:
        names = {_normalize(info.name), _normalize(info.distribution)}
        if names & disabled:
            info.status, info.error = "disabled", f"disabled by {DISABLE_VARIABLE}"
            return None
        if allowed is not None and not names & allowed:
            info.status, info.error = "disabled", f"not listed in {ALLOW_VARIABLE}"
            return None
        try:
            module = entry_point.load()
        except Exception as error:
            info.status, info.error = "failed", f"import failed: {type(error).__name__}: {error}"
            return None
        if not isinstance(module, ModuleType):
            info.status = "failed"
            info.error = (
                f"the entry point must name a module, but '{entry_point.value}' is a {type(module).__name__}"
            )
            return None
        declared = getattr(module, "FABRIC_PLUGIN_API", None)
        supported = _api_versions(declared)
        if supported is None:
            info.status = "failed"
            info.error = (
                f"FABRIC_PLUGIN_API must be an integer or a tuple of integers (the plugin API versions the "
                f"module supports), got {declared!r}"
            )
            return None
        info.api_versions = supported
        if supported and PLUGIN_API_VERSION not in supported:
            info.status = "incompatible"
            info.error = (
                f"the plugin supports fabric plugin API version(s) {', '.join(map(str, supported))}, "
                f"but fabric-core {_core_version()} provides version {PLUGIN_API_VERSION}"
            )
            return None
        return module

    def _register(self, manager: pluggy.PluginManager, info: PluginInfo, module: ModuleType) -> None:
        try:
            manager.register(module, name=f"{info.distribution}:{info.name}")
            callers = manager.get_hookcallers(module) or []
            unknown = [c.name for c in callers if c.spec is None]
            if unknown:
                raise ValueError(
                    f"implements unknown hook(s) {', '.join(unknown)}; known hooks: "
                    + ", ".join(ALL_REGISTRIES)
                )
        except Exception as error:
            info.status, info.error = "failed", f"invalid plugin: {error}"
            manager.unregister(module) if manager.is_registered(module) else None
            return
        try:
            for caller in callers:
                registry = ALL_REGISTRIES[caller.name]
                before = set(registry._entries)
                for impl in caller.get_hookimpls():
                    if impl.plugin is module:
                        with registry.registering_for(info.distribution):
                            impl.function(**{arg: registry for arg in impl.argnames})
                info.hooks.append(caller.name)
                added = [name for name in registry._entries if name not in before]
                info.registered[registry.plural] = added
        except Exception as error:
            info.status, info.error = "failed", f"{type(error).__name__}: {error}"
            manager.unregister(module)


_LOADER = _PluginLoader()


def ensure_plugins_loaded() -> None:
    """Discover and register every installed plugin, once per process."""
    _LOADER.ensure_loaded()


def plugin_infos() -> list[PluginInfo]:
    """The record of every plugin found, the built-in core plugin first."""
    ensure_plugins_loaded()
    return list(_LOADER.infos)


def discovery_seconds() -> float:
    """How long discovery took in this process."""
    ensure_plugins_loaded()
    return _LOADER.seconds


def reset_plugins() -> None:
    """Forget every registration and discover the plugins again on next use (for tests)."""
    global _LOADER
    with _LOADER._lock:
        for registry in ALL_REGISTRIES.values():
            registry._entries.clear()
            registry._classes.clear()
            registry._discovered = False
        _LOADER = _PluginLoader()


def failure_for_name(registry: Registry, name: str) -> str | None:
    """Explain why ``name`` is missing when the plugin that provides it did not load."""
    distribution = registry.provider_of(name)
    problems = [info for info in _LOADER.infos if info.status != "loaded"]
    for info in problems:
        if distribution is not None and _normalize(info.distribution) == _normalize(distribution):
            return (
                f"The {registry.kind} '{name}' is provided by the plugin '{info.name}' "
                f"({info.distribution} {info.version}), which is not loaded: {info.error}."
            )
    if distribution is None and problems:
        listing = "; ".join(f"'{i.name}' ({i.distribution}): {i.error}" for i in problems)
        available = ", ".join(registry._entries) or "(none)"
        return (
            f"Unknown {registry.kind} '{name}'. Available {registry.plural}: {available}. "
            f"Plugins that did not load and may provide it: {listing}."
        )
    return None


def _snapshot() -> dict[str, dict[str, Any]]:
    return {hook: dict(registry._entries) for hook, registry in ALL_REGISTRIES.items()}


def _restore(snapshot: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Put every registry back as it was; return the names that were removed, by registry."""
    removed: dict[str, list[str]] = {}
    for hook, registry in ALL_REGISTRIES.items():
        before = snapshot[hook]
        added = [name for name, entry in registry._entries.items() if before.get(name) is not entry]
        if added:
            removed[registry.plural] = added
            registry._entries = dict(before)
            registry._classes.clear()
    return removed


def _api_versions(declared: object) -> list[int] | None:
    """``FABRIC_PLUGIN_API`` as a list of versions (empty when undeclared), ``None`` when malformed."""
    if declared is None:
        return []
    if isinstance(declared, int) and not isinstance(declared, bool):
        return [declared]
    if isinstance(declared, (tuple, list, set, frozenset)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in declared
    ):
        return sorted(declared)
    return None


def _info_for(entry_point: EntryPoint) -> PluginInfo:
    dist = entry_point.dist
    distribution = dist.name if dist is not None else "(unknown distribution)"
    version = dist.version if dist is not None else ""
    return PluginInfo(entry_point.name, entry_point.value, distribution, version)


def _core_version() -> str:
    from fabric_core.__about__ import __version__

    return __version__


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_set(value: str) -> set[str]:
    return {_normalize(part.strip()) for part in value.split(",") if part.strip()}


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
