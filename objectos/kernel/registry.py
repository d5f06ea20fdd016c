"""The service registry: which plugin provides which service, and who hooks which event.

A plain data structure the kernel actor holds and checkpoints
(:meth:`ServiceRegistry.to_dict` / :meth:`ServiceRegistry.from_dict`). Plugins
find each other's services by name through it, never by import; the data
engine asks it which plugins have handlers for a data hook before calling any
plugin host. Every change bumps :attr:`ServiceRegistry.revision`, so callers in
other processes can cache a copy and refresh only when the revision moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from objectos.errors import ServiceConflict, ServiceNotFound
from objectos.kernel.events import check_pattern, event_matches


@dataclass(frozen=True)
class HookEntry:
    """A plugin has handlers for ``event`` (a pattern) at ``priority``."""

    event: str
    plugin_id: str
    priority: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"event": self.event, "plugin": self.plugin_id, "priority": self.priority}


class ServiceRegistry:
    """Service providers and hook registrations, with a change counter."""

    def __init__(self) -> None:
        """Create an empty registry at revision 0."""
        self._services: dict[str, str] = {}
        # Registration order matters: at equal priority, hooks run in the order
        # plugins registered them, which is the dependency order plugins start in.
        self._hooks: list[HookEntry] = []
        self._revision = 0

    @property
    def revision(self) -> int:
        """Grows by one with every change; never goes back."""
        return self._revision

    # -- services ----------------------------------------------------------------

    def register(self, service: str, plugin_id: str) -> None:
        """Record that ``plugin_id`` provides ``service``.

        Registering the same pair again changes nothing. Raises
        :class:`ServiceConflict` when another plugin already provides it.
        """
        self._check_free(service, plugin_id)
        if self._services.get(service) == plugin_id:
            return
        self._services[service] = plugin_id
        self._bump()

    def provider(self, service: str) -> str:
        """The plugin id that provides ``service``; :class:`ServiceNotFound` if none."""
        try:
            return self._services[service]
        except KeyError:
            raise ServiceNotFound(
                f"no plugin provides service {service!r}", details={"service": service}
            ) from None

    def services(self) -> dict[str, str]:
        """``{service: plugin id}``, sorted by service name."""
        return dict(sorted(self._services.items()))

    # -- hooks -------------------------------------------------------------------

    def register_hook(self, event: str, plugin_id: str, priority: int = 100) -> None:
        """Record that ``plugin_id`` has handlers for ``event`` (a pattern, see EventBus).

        Registering the same entry again changes nothing.
        """
        entry = HookEntry(check_pattern(event), plugin_id, priority)
        if entry in self._hooks:
            return
        self._hooks.append(entry)
        self._bump()

    def hooks_for(self, event: str) -> list[tuple[str, int]]:
        """``(plugin id, priority)`` of every plugin to call for ``event``, in call order.

        Each plugin appears once, at the lowest priority of its matching
        registrations: its host runs all of its own matching handlers in one
        call, so listing it twice would run them twice. Lower priority first;
        ties in registration order. ``"*"`` lists every plugin with any hook.
        """
        best: dict[str, tuple[int, int]] = {}
        for position, entry in enumerate(self._hooks):
            if event != "*" and not event_matches(entry.event, event):
                continue
            rank = (entry.priority, position)
            if entry.plugin_id not in best or rank < best[entry.plugin_id]:
                best[entry.plugin_id] = rank
        ordered = sorted(best.items(), key=lambda item: item[1])
        return [(plugin_id, priority) for plugin_id, (priority, _) in ordered]

    def hooks(self) -> list[HookEntry]:
        """Every hook registration, in registration order."""
        return list(self._hooks)

    # -- whole plugins -------------------------------------------------------------

    def unregister_plugin(self, plugin_id: str) -> None:
        """Forget every service and hook of ``plugin_id`` (it stopped or failed)."""
        services = {s: p for s, p in self._services.items() if p != plugin_id}
        hooks = [h for h in self._hooks if h.plugin_id != plugin_id]
        if len(services) == len(self._services) and len(hooks) == len(self._hooks):
            return
        self._services, self._hooks = services, hooks
        self._bump()

    def sync_plugin(
        self,
        plugin_id: str,
        services: Iterable[str],
        hooks: Iterable[tuple[str, int]],
    ) -> bool:
        """Make ``plugin_id``'s registrations exactly ``services`` and ``hooks``.

        ``hooks`` are ``(event pattern, priority)`` pairs. For a reconciliation
        loop that re-derives the registry on every pass: the revision moves (by
        one) only when something actually changed, which this returns. Nothing
        changes when a service conflicts with another plugin's.
        """
        wanted_services = set(services)
        wanted_hooks = [HookEntry(check_pattern(e), plugin_id, p) for e, p in hooks]
        for service in sorted(wanted_services):
            self._check_free(service, plugin_id)

        current_services = {s for s, p in self._services.items() if p == plugin_id}
        current_hooks = [h for h in self._hooks if h.plugin_id == plugin_id]
        if current_services == wanted_services and set(current_hooks) == set(wanted_hooks):
            return False

        for service in current_services - wanted_services:
            del self._services[service]
        for service in wanted_services:
            self._services[service] = plugin_id
        # Registrations that stay keep their place in the order; new ones go last.
        kept = [h for h in self._hooks if h.plugin_id != plugin_id or h in wanted_hooks]
        added = [h for h in dict.fromkeys(wanted_hooks) if h not in current_hooks]
        self._hooks = kept + added
        self._bump()
        return True

    # -- checkpoint ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly checkpoint: revision, services and hooks in order."""
        return {
            "revision": self._revision,
            "services": self.services(),
            "hooks": [entry.to_dict() for entry in self._hooks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRegistry:
        """Rebuild a registry from :meth:`to_dict`, at the same revision."""
        registry = cls()
        for service, plugin_id in data.get("services", {}).items():
            registry.register(service, plugin_id)
        for hook in data.get("hooks", []):
            registry.register_hook(hook["event"], hook["plugin"], int(hook["priority"]))
        # Keep counting from the checkpointed revision, so a cache from before the
        # kernel restarted never looks newer than the restored registry.
        registry._revision = max(int(data.get("revision", 0)), registry._revision)
        return registry

    def _check_free(self, service: str, plugin_id: str) -> None:
        provider = self._services.get(service)
        if provider is not None and provider != plugin_id:
            raise ServiceConflict(
                f"service {service!r} is already provided by {provider}; "
                f"{plugin_id} cannot provide it too",
                details={"service": service, "provider": provider, "plugin": plugin_id},
            )

    def _bump(self) -> None:
        self._revision += 1
