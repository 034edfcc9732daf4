"""The plugin loader: finds plugin distributions and lets each fill the registries it owns.

The loader is given the registries, one per registration hook, and attaches itself to
each (`Registry.discover_with`); the first lookup of any name runs discovery once.
Each plugin is loaded and registered on its own: a plugin that fails to import, declares
an incompatible API version, implements an unknown hook or registers a name that is taken
is recorded with the cause, its partial registrations are rolled back, and the other
plugins keep working.

pluggy, importlib.metadata and the plugin modules are imported only when discovery runs,
so building the registries costs nothing.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal

from fabric_core.registry import Registry, RegistrySnapshot

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    import pluggy

__all__ = ["ALLOW_VARIABLE", "DISABLE_VARIABLE", "PluginInfo", "PluginLoader", "PluginStatus"]

PluginStatus = Literal["loaded", "failed", "disabled", "incompatible"]

DISABLE_VARIABLE: Final = "FABRIC_DISABLE_PLUGINS"
"""Comma-separated entry-point or distribution names of plugins to skip."""

ALLOW_VARIABLE: Final = "FABRIC_LOAD_PLUGINS"
"""Comma-separated entry-point or distribution names of the only plugins to load."""

BUILTIN_NAME: Final = "core"
"""The record name of fabric-core's own registrations."""


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


class PluginLoader:
    """Discovers the ``fabric`` entry points and registers each plugin into its registries.

    Args:
        registries: Each registration hook name (``"fabric_register_strategies"``) mapped to
            the registry its implementations fill. The loader owns them from now on.
    """

    def __init__(self, registries: Mapping[str, Registry]) -> None:
        self.registries: Final = dict(registries)
        self.infos: list[PluginInfo] = []
        self.seconds = 0.0
        self._done = False
        self._lock = threading.RLock()
        for registry in self.registries.values():
            registry.discover_with(self)

    def ensure_loaded(self) -> None:
        """Discover and register every installed plugin, once."""
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            self._load_all()

    def reset(self) -> None:
        """Forget every registration and record; discovery runs again on next lookup."""
        with self._lock:
            for registry in self.registries.values():
                registry.clear()
            self.infos = []
            self.seconds = 0.0
            self._done = False

    def explain_missing(self, registry: Registry, name: str) -> str | None:
        """Why ``name`` is missing from ``registry`` when a plugin that may provide it did not load."""
        distribution = registry.provider_of(name)
        problems = [info for info in self.infos if info.status != "loaded"]
        for info in problems:
            if distribution is not None and _normalize(info.distribution) == _normalize(distribution):
                return (
                    f"The {registry.kind} '{name}' is provided by the plugin '{info.name}' "
                    f"({info.distribution} {info.version}), which is not loaded: {info.error}."
                )
        if distribution is None and problems:
            listing = "; ".join(f"'{i.name}' ({i.distribution}): {i.error}" for i in problems)
            available = ", ".join(registry.available()) or "(none)"
            return (
                f"Unknown {registry.kind} '{name}'. Available {registry.plural}: {available}. "
                f"Plugins that did not load and may provide it: {listing}."
            )
        return None

    # -- discovery ----------------------------------------------------------------------

    def _load_all(self) -> None:
        from importlib.metadata import entry_points

        import pluggy

        from fabric_core import _builtin_plugin, hookspecs

        start = time.perf_counter()
        for registry in self.registries.values():
            registry.mark_discovered()
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        builtin = PluginInfo(BUILTIN_NAME, _builtin_plugin.__name__, "fabric-core", _core_version())
        self._register(manager, builtin, _builtin_plugin)
        disabled = _name_set(os.environ.get(DISABLE_VARIABLE, ""))
        allowed = _name_set(os.environ.get(ALLOW_VARIABLE, "")) or None
        infos = [builtin]
        for entry_point in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            info = _info_for(entry_point)
            # Covers names a module registers while it is imported, too: a plugin that does
            # not load leaves nothing behind.
            snapshots = self._snapshots()
            module = _import(entry_point, info, disabled, allowed)
            if module is not None:
                self._register(manager, info, module)
            if info.status != "loaded":
                info.rolled_back = self._restore(snapshots)
                info.registered.clear()
            infos.append(info)
        self.infos = infos
        self.seconds = time.perf_counter() - start
        self._done = True

    def _register(self, manager: pluggy.PluginManager, info: PluginInfo, module: ModuleType) -> None:
        try:
            manager.register(module, name=f"{info.distribution}:{info.name}")
            manager.check_pending()
        except Exception as error:  # a plugin pluggy refuses, for any reason, is reported
            info.status = "failed"
            info.error = f"invalid plugin: {error}; the known hooks are {', '.join(self.registries)}"
            if manager.is_registered(module):
                manager.unregister(module)
            return
        try:
            for caller in manager.get_hookcallers(module) or []:
                registry = self.registries[caller.name]
                before = registry.snapshot()
                for impl in caller.get_hookimpls():
                    if impl.plugin is module:
                        with registry.registering_for(info.distribution):
                            impl.function(**{arg: registry for arg in impl.argnames})
                info.hooks.append(caller.name)
                info.registered[registry.plural] = registry.names_added_since(before)
        except Exception as error:
            info.status, info.error = "failed", f"{type(error).__name__}: {error}"
            manager.unregister(module)

    def _snapshots(self) -> dict[str, RegistrySnapshot]:
        return {hook: registry.snapshot() for hook, registry in self.registries.items()}

    def _restore(self, snapshots: Mapping[str, RegistrySnapshot]) -> dict[str, list[str]]:
        """Put every registry back as it was; return the names that were removed, by registry."""
        removed: dict[str, list[str]] = {}
        for hook, registry in self.registries.items():
            added = registry.restore(snapshots[hook])
            if added:
                removed[registry.plural] = added
        return removed


def _import(
    entry_point: EntryPoint, info: PluginInfo, disabled: set[str], allowed: set[str] | None
) -> ModuleType | None:
    """The plugin module, or ``None`` with ``info`` saying why it is not loaded."""
    from fabric_core.hookspecs import PLUGIN_API_VERSION

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
    if dist is None:
        return PluginInfo(entry_point.name, entry_point.value, "(unknown distribution)", "")
    # Once: ``dist.name`` and ``dist.version`` would each parse the whole METADATA file.
    metadata = dist.metadata
    return PluginInfo(entry_point.name, entry_point.value, metadata["Name"], metadata["Version"])


def _core_version() -> str:
    from fabric_core.__about__ import __version__

    return __version__


def _normalize(name: str) -> str:
    """A distribution or entry-point name compared the way packaging does (``fabric_DDP`` is ``fabric-ddp``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_set(value: str) -> set[str]:
    return {_normalize(part.strip()) for part in value.split(",") if part.strip()}
