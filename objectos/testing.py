"""Test doubles for plugin authors: run a plugin's code without Ray.

In a hub each plugin lives in its own plugin host actor, and its context talks
to other actors. These in-process stand-ins behave like the real collaborators
where it matters for a plugin's correctness:

- :class:`MemoryScopedStorage` accepts and refuses exactly what the real
  storage accepts and refuses (same validation, values copied as JSON).
- :class:`LocalServiceDirectory` calls service methods the way the host does:
  only public methods, the calling plugin's id passed as ``caller`` to methods
  that take a keyword-only ``caller``, and arguments, results and errors copied
  through pickle, as crossing an actor boundary would.
- :class:`RecordingEventPublisher` remembers every triggered event.

Typical use::

    from objectos.testing import make_context

    async def test_greet():
        context = make_context(HelloPlugin, config={"greeting": "Hi"})
        plugin = HelloPlugin(context)
        await plugin.on_load()
        hello = context.provided_services["hello"]   # or go through a directory:
        assert (await hello.greet("Ada"))["message"] == "Hi, Ada!"

    async def test_greet_through_the_directory():
        services = LocalServiceDirectory()
        await load_plugin(StoragePlugin, {"mode": "memory"}, services)
        await load_plugin(HelloPlugin, {}, services)   # its storage is the storage service
        result = await services.get("hello").greet("Ada")

Several plugins can share one directory: :meth:`LocalServiceDirectory.for_caller`
returns a view of the same registry that calls as another plugin.
"""

from __future__ import annotations

import inspect
import logging
import pickle
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from objectos.errors import ServiceNotFound
from objectos.kernel.plugin import (
    EventPublisher,
    Plugin,
    PluginContext,
    ScopedStorage,
)
from objectos.plugins.storage import STORAGE_SERVICE, MemoryStorageEngine, ServiceBackedStorage

DEFAULT_TEST_CALLER = "com.example.tests"

P = TypeVar("P", bound=Plugin)


def _across_boundary(value: Any) -> Any:
    """Copy ``value`` the way an actor call would (Ray pickles arguments and results)."""
    return pickle.loads(pickle.dumps(value))


class MemoryScopedStorage:
    """ScopedStorage over a :class:`MemoryStorageEngine`, fixed to one scope.

    Shares the real engine's validation, so a plugin that stores a tuple or a
    NaN fails in its unit tests exactly as it would in a hub.
    """

    def __init__(self, scope: str = DEFAULT_TEST_CALLER, engine: MemoryStorageEngine | None = None):
        """``engine`` may be shared to give several scopes one store."""
        self.scope = scope
        self.engine = engine or MemoryStorageEngine()

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.engine.get(self.scope, key, default)

    async def set(self, key: str, value: Any) -> None:
        await self.engine.set(self.scope, key, value)

    async def delete(self, key: str) -> bool:
        return await self.engine.delete(self.scope, key)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self.engine.keys(self.scope, prefix)


def _takes_caller(method: Callable[..., Any]) -> bool:
    try:
        parameter = inspect.signature(method).parameters.get("caller")
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY


class _LocalServiceProxy:
    """What ``services.get(name)`` returns: ``await proxy.method(*args, **kwargs)``."""

    def __init__(self, directory: LocalServiceDirectory, name: str) -> None:
        self._directory = directory
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(f"service methods are public; {method!r} is not callable")

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._directory.call(self._name, method, args, kwargs)

        call.__name__ = method
        return call

    def __repr__(self) -> str:
        return f"<service {self._name!r} as seen by {self._directory.caller!r}>"


class LocalServiceDirectory:
    """An in-process ServiceDirectory: services by name, called directly.

    One registry, many callers: each plugin's context gets
    ``directory.for_caller(plugin_id)``; services are looked up at call time,
    like the host's proxies, so registering after building a context works.
    """

    def __init__(
        self,
        caller: str = DEFAULT_TEST_CALLER,
        services: Mapping[str, Any] | None = None,
        *,
        copy_values: bool = True,
    ) -> None:
        """``services`` maps name → implementation; ``copy_values=False`` skips pickling."""
        self.caller = caller
        self.copy_values = copy_values
        self._registry: dict[str, Any] = dict(services or {})

    def for_caller(self, caller: str) -> LocalServiceDirectory:
        """The same registry, calling as plugin ``caller``."""
        view = LocalServiceDirectory(caller, copy_values=self.copy_values)
        view._registry = self._registry
        return view

    def register(self, name: str, implementation: Any) -> None:
        """Offer ``implementation`` under ``name`` (a second one for a name is an error)."""
        if name in self._registry:
            raise ValueError(f"service {name!r} is already registered")
        self._registry[name] = implementation

    def publish(self, context: PluginContext) -> None:
        """Register what a plugin offered in ``on_load`` (the host's job after loading)."""
        for name, implementation in context.provided_services.items():
            self.register(name, implementation)

    def unregister(self, name: str) -> None:
        self._registry.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self._registry

    def get(self, name: str) -> Any:
        return _LocalServiceProxy(self, name)

    async def names(self) -> list[str]:
        return sorted(self._registry)

    async def call(
        self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call ``method`` of service ``name`` as the host would, on behalf of ``self.caller``."""
        implementation = self._registry.get(name)
        if implementation is None:
            raise ServiceNotFound(f"no plugin provides service {name!r}", details={"service": name})
        target = getattr(implementation, method, None)
        if method.startswith("_") or not inspect.iscoroutinefunction(target):
            raise AttributeError(f"service {name!r} has no public async method {method!r}")
        if "caller" in kwargs:
            # The host fills caller; letting plugin code choose it would let it
            # impersonate another plugin (e.g. read its storage).
            raise TypeError("'caller' is supplied by the plugin host, not by the calling plugin")
        if self.copy_values:
            args, kwargs = _across_boundary((args, kwargs))
        if _takes_caller(target):
            kwargs["caller"] = self.caller
        try:
            result = await target(*args, **kwargs)
        except Exception as exc:
            if not self.copy_values:
                raise
            # Re-raise a copy: only what survives pickling reaches a remote caller.
            raise _across_boundary(exc) from exc
        return _across_boundary(result) if self.copy_values else result


class RecordingEventPublisher:
    """An EventPublisher that records ``(event, payload)`` and runs no handler.

    ``results`` maps an event name to what ``trigger`` returns for it (the
    handler results a real bus would collect); by default an empty list.
    """

    def __init__(self, results: Mapping[str, list[Any]] | None = None) -> None:
        self.triggered: list[tuple[str, dict[str, Any]]] = []
        self._results = dict(results or {})

    async def trigger(self, event: str, payload: dict[str, Any]) -> list[Any]:
        self.triggered.append((event, _across_boundary(payload)))
        return list(self._results.get(event, []))

    def payloads(self, event: str) -> list[dict[str, Any]]:
        """Payloads of every trigger of ``event``, oldest first."""
        return [payload for name, payload in self.triggered if name == event]


def make_context(
    plugin_cls: type[Plugin],
    config: dict[str, Any] | None = None,
    services: LocalServiceDirectory | Mapping[str, Any] | None = None,
    *,
    storage: ScopedStorage | None = None,
    events: EventPublisher | None = None,
    settings: Mapping[str, Any] | None = None,
) -> PluginContext:
    """A PluginContext for ``plugin_cls`` as a plugin host would build it, without Ray.

    ``config`` goes through ``manifest.resolve_config`` (defaults applied; a bad
    key, type or enum value raises ValueError, as the kernel would refuse it).
    ``services`` is a shared :class:`LocalServiceDirectory` (this plugin calls
    through its own view of it) or a plain ``{name: implementation}`` mapping.
    ``storage`` defaults to the ``storage`` service when the directory already
    has one — exactly the production path, scoped by this plugin's id — and to a
    fresh :class:`MemoryScopedStorage` otherwise. ``settings`` are the hub-wide
    settings (``databaseUrl``, ``dataDir``, ``hubId``).
    """
    manifest = plugin_cls.manifest
    if isinstance(services, LocalServiceDirectory):
        directory = services.for_caller(manifest.id)
    else:
        directory = LocalServiceDirectory(manifest.id, services)
    if storage is None:
        if directory.has(STORAGE_SERVICE):
            storage = ServiceBackedStorage(directory)
        else:
            storage = MemoryScopedStorage(manifest.id)
    return PluginContext(
        plugin_id=manifest.id,
        manifest=manifest,
        config=manifest.resolve_config(dict(config or {})),
        storage=storage,
        services=directory,
        events=events or RecordingEventPublisher(),
        logger=logging.getLogger(f"objectos.plugin.{manifest.id}"),
        settings=dict(settings or {}),
    )


async def load_plugin(
    plugin_cls: type[P],
    config: dict[str, Any] | None = None,
    services: LocalServiceDirectory | None = None,
    *,
    storage: ScopedStorage | None = None,
    events: EventPublisher | None = None,
    settings: Mapping[str, Any] | None = None,
) -> P:
    """Build the context, run ``on_enable`` and ``on_load``, publish the plugin's services.

    The shortcut for the usual test: afterwards other plugins (or the test,
    through ``services.for_caller(...)``) reach the new services by name.
    """
    directory = services if services is not None else LocalServiceDirectory()
    context = make_context(
        plugin_cls, config, directory, storage=storage, events=events, settings=settings
    )
    plugin = plugin_cls(context)
    await plugin.on_enable()
    await plugin.on_load()
    directory.publish(context)
    return plugin


__all__ = [
    "LocalServiceDirectory",
    "MemoryScopedStorage",
    "RecordingEventPublisher",
    "load_plugin",
    "make_context",
]
