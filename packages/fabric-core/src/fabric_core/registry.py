"""Name → class registries that load their classes lazily.

A registry maps a name (``"ddp"``) to a target, which is either a class or a
``"module:Class"`` path. Paths are imported only when the name is built, so a plugin can
register ``"fabric_deepspeed.strategy:DeepSpeedStrategy"`` without importing deepspeed.

A registry does not find plugins itself: the plugin loader that fills it attaches itself
with `Registry.discover_with`, and the registry asks it to run the first time a name is
looked up. This module imports nothing of fabric's and not torch: the command line lists
registries without it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast, overload

__all__ = [
    "Discovery",
    "DuplicateNameError",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "RegistrySnapshot",
    "UnknownNameError",
]

_T = TypeVar("_T")

DIRECT_PROVIDER = "(registered in code)"
"""The provider recorded for names registered directly rather than through a plugin."""


class RegistryError(ValueError):
    """A registry was asked for something it cannot do."""


class UnknownNameError(RegistryError, LookupError):
    """A name was asked for that nothing registered."""


class DuplicateNameError(RegistryError):
    """A name was registered twice without ``override=True``."""


@dataclass(frozen=True)
class RegistryEntry:
    """One registered name.

    Attributes:
        name: The name users pass, e.g. ``"ddp"``.
        target: The class, or a ``"module:Class"`` path imported on first use.
        description: One line shown by ``fabric strategies``.
        init_params: Keyword arguments passed to the class when the name is built.
        provider: The distribution that registered the name (``"fabric-ddp"``), or
            `DIRECT_PROVIDER` for names registered in code.
        requires: Import names that must be installed for the target to be built
            (the target's own module is always checked).
    """

    name: str
    target: type | str
    description: str = ""
    init_params: Mapping[str, Any] = field(default_factory=dict)
    provider: str = DIRECT_PROVIDER
    requires: tuple[str, ...] = ()

    @property
    def target_path(self) -> str:
        """The target as a ``"module:Class"`` string."""
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"

    def missing_requirements(self) -> list[str]:
        """Import names this entry needs that are not installed (nothing is imported)."""
        module = self.target_path.partition(":")[0]
        needed = (module.partition(".")[0], *self.requires)
        return [name for name in needed if importlib.util.find_spec(name) is None]


class Discovery(Protocol):
    """What a registry needs from the plugin loader that fills it."""

    def ensure_loaded(self) -> None:
        """Register every installed plugin's names, once; later calls return at once."""

    def explain_missing(self, registry: Registry, name: str) -> str | None:
        """Why ``name`` is missing from ``registry`` when a plugin that may provide it did not load."""


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registrations of one registry at one moment, for `Registry.restore`."""

    entries: Mapping[str, RegistryEntry]


class Registry:
    """A registry of names for one kind of component (strategy, accelerator, ...).

    Args:
        kind: The singular noun used in messages, e.g. ``"strategy"``.
        plural: The plural noun, e.g. ``"strategies"``.
        hints: Names that a first-party distribution provides when installed, mapped to
            that distribution; an unknown name found here tells the user what to install.
        discovery: The plugin loader that fills this registry on first lookup; ``None`` for
            a registry filled only in code. See `discover_with`.
    """

    base_class: str | None = None
    """``"module:Class"`` of the class every registered target must derive from (``None``: any).

    Checked at `register` for a class, and when a ``"module:Class"`` path is imported.
    """

    def __init__(
        self,
        kind: str,
        plural: str,
        hints: Mapping[str, str] | None = None,
        *,
        discovery: Discovery | None = None,
    ) -> None:
        self.kind = kind
        self.plural = plural
        self._hints = dict(hints or {})
        self._entries: dict[str, RegistryEntry] = {}
        self._classes: dict[str, type[Any]] = {}
        self._provider = DIRECT_PROVIDER
        self._discovery = discovery
        self._discovered = discovery is None
        self._lock = threading.RLock()

    # -- the plugin loader's side -------------------------------------------------------

    def discover_with(self, discovery: Discovery) -> None:
        """Let ``discovery`` fill this registry the first time a name is looked up."""
        self._discovery = discovery
        self._discovered = False

    @property
    def discovered(self) -> bool:
        """Whether the plugins have been asked for their names (or nothing needs asking)."""
        return self._discovered

    def mark_discovered(self) -> None:
        """Record that discovery has run (the loader calls it before registering plugins)."""
        self._discovered = True

    def snapshot(self) -> RegistrySnapshot:
        """The current registrations, to put back with `restore`."""
        with self._lock:
            return RegistrySnapshot(dict(self._entries))

    def names_added_since(self, snapshot: RegistrySnapshot) -> list[str]:
        """Names registered, or registered anew, since ``snapshot`` was taken."""
        with self._lock:
            return [name for name, entry in self._entries.items() if snapshot.entries.get(name) is not entry]

    def restore(self, snapshot: RegistrySnapshot) -> list[str]:
        """Put the registrations back as they were at ``snapshot``; return the names removed."""
        with self._lock:
            added = self.names_added_since(snapshot)
            self._entries = dict(snapshot.entries)
            self._classes.clear()
            return added

    def clear(self) -> None:
        """Forget every registration; the loader discovers the plugins again on next lookup."""
        with self._lock:
            self._entries.clear()
            self._classes.clear()
            self._discovered = self._discovery is None

    @property
    def hints(self) -> Mapping[str, str]:
        """The first-party names this registry knows of, mapped to their distribution."""
        return dict(self._hints)

    # -- registration -------------------------------------------------------------------

    @overload
    def register(
        self,
        name: str,
        target: None = None,
        description: str | None = None,
        override: bool = False,
        *,
        requires: tuple[str, ...] = (),
        **init_params: Any,
    ) -> Callable[[_T], _T]: ...

    @overload
    def register(
        self,
        name: str,
        target: type | str,
        description: str | None = None,
        override: bool = False,
        *,
        requires: tuple[str, ...] = (),
        **init_params: Any,
    ) -> type | str: ...

    def register(
        self,
        name: str,
        target: type | str | None = None,
        description: str | None = None,
        override: bool = False,
        *,
        requires: tuple[str, ...] = (),
        **init_params: Any,
    ) -> Any:
        """Register ``name`` for a class or a ``"module:Class"`` path.

        Called without ``target`` it returns a class decorator::

            @STRATEGY_REGISTRY.register("my_ddp", description="DDP with my tweaks")
            class MyDDP(ParallelStrategy): ...

        Args:
            name: The name users pass to ``Fabric``.
            target: The class, or the dotted path of a class imported on first use.
            description: One line for listings; defaults to the class docstring's first line.
            override: Replace an existing registration instead of raising. Installed plugins
                are discovered before a name registered in code is checked, so a name a
                plugin provides (``"ddp"``) is never taken over by accident.
            requires: Extra import names the class needs, used to report whether the
                name can be built on this machine without importing anything.
            **init_params: Keyword arguments passed to the class when the name is built.

        Raises:
            TypeError: ``name`` is not a string, ``target`` is not a class or path, or the
                class does not derive from the registry's base class.
            DuplicateNameError: ``name`` is registered already and ``override`` is false.
        """
        if target is None:

            def decorator(cls: _T) -> _T:
                self.register(
                    name, cast(type, cls), description, override=override, requires=requires, **init_params
                )
                return cls

            return decorator

        self._check_name(name)
        if isinstance(target, str):
            if target.count(":") != 1 or not all(target.partition(":")[::2]):
                raise TypeError(
                    f"The {self.kind} '{name}' must be registered with a class or a 'module:Class' "
                    f"path, got {target!r}."
                )
        elif not isinstance(target, type):
            raise TypeError(
                f"The {self.kind} '{name}' must be registered with a class or a 'module:Class' path, "
                f"got an instance of {type(target).__name__}. Register the class and pass its "
                "arguments as keyword arguments: register(name, MyClass, arg=value)."
            )
        else:
            self._check_base_class(name, target)
        if self._provider == DIRECT_PROVIDER:
            # A name registered in code is checked against the plugins' names too.
            self._ensure_discovered()
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and not override:
                raise DuplicateNameError(
                    f"The {self.kind} '{name}' is already registered by {existing.provider} "
                    f"({existing.target_path}). Choose another name, or pass override=True to replace it."
                )
            if description is None:
                description = _first_doc_line(target)
            self._entries[name] = RegistryEntry(
                name, target, description, dict(init_params), self._provider, tuple(requires)
            )
            self._classes.pop(name, None)
        return target

    def remove(self, name: str) -> None:
        """Remove a registered name.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        self._ensure_discovered()
        with self._lock:
            if name not in self._entries:
                raise self._unknown(name)
            del self._entries[name]
            self._classes.pop(name, None)

    @contextmanager
    def registering_for(self, provider: str) -> Iterator[None]:
        """Record ``provider`` as the source of every name registered inside the block."""
        with self._lock:
            previous, self._provider = self._provider, provider
            try:
                yield
            finally:
                self._provider = previous

    # -- lookup -------------------------------------------------------------------------

    def entry(self, name: str) -> RegistryEntry:
        """The registration of ``name``.

        Raises:
            UnknownNameError: With the available names, and the distribution to install
                when a first-party plugin provides ``name``.
        """
        self._ensure_discovered()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def get(self, name: str) -> type[Any]:
        """The class registered as ``name``, importing its module if needed.

        Raises:
            UnknownNameError: Nothing is registered as ``name`` (the message lists what is).
            RegistryError: The registered path cannot be imported, or is not a suitable class.
        """
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        entry = self.entry(name)
        cls = _import_target(entry, self.kind)
        self._check_base_class(name, cls, entry)
        self._classes[name] = cls
        return cls

    def get_class(self, name: str) -> type[Any]:
        """The class registered as ``name`` (the same as `get`)."""
        return self.get(name)

    def build(self, name: str, **overrides: Any) -> Any:
        """Build the component registered as ``name``.

        The init arguments given at registration are passed to the class, updated by
        ``overrides``: ``STRATEGY_REGISTRY.build("ddp_spawn")`` is
        ``DDPStrategy(start_method="spawn")``.
        """
        cls = self.get(name)
        params = {**self._entries[name].init_params, **overrides}
        return cls(**params)

    def init_params(self, name: str) -> dict[str, Any]:
        """The init arguments registered with ``name``."""
        return dict(self.entry(name).init_params)

    def available(self) -> list[str]:
        """The registered names, in registration order."""
        self._ensure_discovered()
        return list(self._entries)

    def entries(self) -> list[RegistryEntry]:
        """Every registration, in registration order."""
        self._ensure_discovered()
        return list(self._entries.values())

    def provider_of(self, name: str) -> str | None:
        """The distribution that provides ``name`` when installed, if it is a first-party name."""
        return self._hints.get(name)

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        self._ensure_discovered()
        return len(self._entries)

    def describe(self) -> str:
        """A readable table of the registered names, their providers and descriptions."""
        entries = self.entries()
        if not entries:
            return f"No {self.plural} are registered."
        width = max(len(e.name) for e in entries)
        lines = [f"{e.name:<{width}}  {e.description}  [{e.provider}]" for e in entries]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        names = ", ".join(self._entries)
        return f"{type(self).__name__}({self.kind}: {names})"

    # -- internals ----------------------------------------------------------------------

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str):
            raise TypeError(f"A {self.kind} name must be a string, got {type(name).__name__} {name!r}.")
        if not name or name != name.strip():
            raise TypeError(
                f"A {self.kind} name must be a non-empty string without surrounding spaces, got {name!r}."
            )

    def _check_base_class(self, name: str, cls: type, entry: RegistryEntry | None = None) -> None:
        if self.base_class is None:
            return
        module_name, _, qualname = self.base_class.partition(":")
        base = getattr(importlib.import_module(module_name), qualname)
        if not issubclass(cls, base):
            source = f" (from {entry.provider}, '{entry.target_path}')" if entry is not None else ""
            raise TypeError(
                f"The {self.kind} '{name}'{source} must be a subclass of {qualname}, but "
                f"{cls.__module__}.{cls.__qualname__} is not. Derive it from {module_name}.{qualname}."
            )

    def _ensure_discovered(self) -> None:
        if not self._discovered and self._discovery is not None:
            self._discovery.ensure_loaded()

    def _unknown(self, name: object) -> UnknownNameError:
        if not isinstance(name, str):
            return UnknownNameError(
                f"A {self.kind} name must be a string, got {type(name).__name__} {name!r}. "
                f"Available {self.plural}: {', '.join(self._entries) or '(none)'}."
            )
        failure = self._discovery.explain_missing(self, name) if self._discovery is not None else None
        if failure:
            return UnknownNameError(failure)
        distribution = self._hints.get(name)
        if distribution is not None:
            return UnknownNameError(
                f"The {self.kind} '{name}' is provided by the distribution '{distribution}', "
                f"which is not installed. Install it with: pip install {distribution}"
            )
        available = list(self._entries)
        message = (
            f"Unknown {self.kind} '{name}'. Available {self.plural}: {', '.join(available) or '(none)'}."
        )
        close = [
            repr(option)
            for option in difflib.get_close_matches(name, [*dict.fromkeys([*available, *self._hints])], n=3)
        ]
        if close:
            message += f" Did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}?"
        return UnknownNameError(message)


def _import_target(entry: RegistryEntry, kind: str) -> type[Any]:
    if not isinstance(entry.target, str):
        return entry.target
    module_name, _, qualname = entry.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as error:
        raise RegistryError(
            f"The {kind} '{entry.name}' (from {entry.provider}) could not be loaded from "
            f"'{entry.target}': {type(error).__name__}: {error}"
        ) from error
    if not isinstance(obj, type):
        raise RegistryError(
            f"The {kind} '{entry.name}' (from {entry.provider}) points at '{entry.target}', "
            f"which is a {type(obj).__name__}, not a class."
        )
    return obj


def _first_doc_line(target: type | str) -> str:
    if isinstance(target, str):
        return ""
    doc = (target.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
