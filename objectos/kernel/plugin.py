"""The plugin API: what a plugin author subclasses and what the hub hands it.

A plugin is a class with a :class:`PluginManifest` and async lifecycle hooks;
what it offers other plugins is a separate service object (only its public
methods are callable from outside, never the plugin's lifecycle)::

    class GreeterService:
        def __init__(self, context: PluginContext) -> None:
            self.context = context

        async def greet(self, name: str) -> str:
            count = (await self.context.storage.get("count", 0)) + 1
            await self.context.storage.set("count", count)
            return f"hello {name} (#{count})"

    class Greeter(Plugin):
        manifest = PluginManifest(id="com.example.greeter", version="1.0.0",
                                  dependencies={"com.objectos.storage": "^0.1.0"})

        async def on_load(self) -> None:
            self.context.register_service("greeter", GreeterService(self.context))

The hub runs each plugin in its own plugin host actor. Everything a plugin
reaches outside itself goes through its :class:`PluginContext`: scoped storage,
other plugins' services (by name, through the kernel's registry — never by
import), the event bus and its configuration. The context's collaborators are
Protocols, so a plugin can be tested with in-memory ones
(``objectos.testing``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from objectos.protocol.manifest import PluginManifest

HookHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@runtime_checkable
class ScopedStorage(Protocol):
    """Key-value storage that only ever sees the calling plugin's keys."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def keys(self, prefix: str = "") -> list[str]: ...


@runtime_checkable
class ServiceDirectory(Protocol):
    """Finds services other plugins registered; returns callable proxies.

    ``await services.get("greeter").greet("ada")`` calls the ``greet`` method
    of whichever plugin registered ``greeter``, wherever it runs.
    """

    def get(self, name: str) -> Any: ...

    async def names(self) -> list[str]: ...


@runtime_checkable
class EventPublisher(Protocol):
    """Triggers named events on the hub-wide bus."""

    async def trigger(self, event: str, payload: dict[str, Any]) -> list[Any]: ...


@dataclass(frozen=True)
class HookRegistration:
    """A handler a plugin registered for a named event."""

    event: str
    handler: HookHandler
    priority: int = 100


@dataclass
class PluginContext:
    """Everything a plugin instance may touch.

    Built by the plugin host; ``register_service`` and ``hook`` record what the
    plugin offers so the host can publish it to the kernel's registry after
    ``on_load``.
    """

    plugin_id: str
    manifest: PluginManifest
    config: dict[str, Any]
    storage: ScopedStorage
    services: ServiceDirectory
    events: EventPublisher
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("objectos.plugin"))
    settings: dict[str, Any] = field(default_factory=dict)
    """Hub-wide settings every plugin may read: ``databaseUrl``, ``dataDir``, ``hubId``."""
    provided_services: dict[str, Any] = field(default_factory=dict)
    hooks: list[HookRegistration] = field(default_factory=list)

    def register_service(self, name: str, implementation: Any) -> None:
        """Offer ``implementation``'s public async methods under ``name``."""
        if name in self.provided_services:
            raise ValueError(f"service {name!r} is already registered by {self.plugin_id}")
        self.provided_services[name] = implementation

    def hook(self, event: str, handler: HookHandler, priority: int = 100) -> None:
        """Run ``handler(payload)`` when ``event`` is triggered; lower priority runs first."""
        self.hooks.append(HookRegistration(event, handler, priority))

    async def trigger(self, event: str, payload: dict[str, Any]) -> list[Any]:
        """Trigger ``event`` on the hub-wide bus; returns the handlers' results."""
        return await self.events.trigger(event, payload)


class Plugin:
    """Base class of every plugin. Override the hooks you need; all are async.

    Lifecycle (``objectos.kernel.lifecycle``): install → enable → load (start)
    → … → disable → uninstall; ``on_upgrade`` runs instead of ``on_install``
    when a different version was installed before.
    """

    manifest: ClassVar[PluginManifest]

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def on_install(self) -> None:
        """First time this plugin is installed in this hub (persisted)."""

    async def on_upgrade(self, previous_version: str, new_version: str) -> None:
        """An older/newer version was installed before this one."""

    async def on_enable(self) -> None:
        """The plugin is about to start."""

    async def on_load(self) -> None:
        """Start: register services and hooks, start background work."""

    async def on_disable(self) -> None:
        """Stop: release resources; the reverse of ``on_load``."""

    async def on_uninstall(self) -> None:
        """The plugin is removed from the hub for good."""

    async def health(self) -> dict[str, Any]:
        """Readiness details; raise or return ``{"ready": False}`` when not ready."""
        return {"ready": True}
