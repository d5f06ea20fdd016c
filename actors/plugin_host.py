"""The plugin host actor: one plugin instance in its own process.

The kernel creates one host per plugin (``plugin:<id>``), asks it to start and
stop, and health-checks it through :meth:`PluginHost.status`. Other plugins
reach this plugin's services through :meth:`PluginHost.call_service`; the
caller's plugin id is attached by the caller's host (``actors.remote``), and
handed to service methods that declare a keyword-only ``caller`` parameter.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from actors.factory import get_kernel
from actors.remote import RayEventPublisher, RayServiceDirectory
from objectos.errors import LifecycleError, NotFound
from objectos.kernel.events import EventBus
from objectos.kernel.lifecycle import PluginLifecycle
from objectos.kernel.loader import load_plugin_class
from objectos.kernel.plugin import Plugin, PluginContext
from objectos.plugins.metrics import PluginMetrics
from objectos.plugins.storage import ServiceBackedStorage
from objectos.protocol.manifest import PluginEntry


class KernelInstallRecord:
    """Which version of a plugin was installed, kept by the kernel."""

    async def get(self, plugin_id: str) -> str | None:
        result: str | None = await get_kernel().installed_version.remote(plugin_id)
        return result

    async def set(self, plugin_id: str, version: str | None) -> None:
        await get_kernel().record_installed.remote(plugin_id, version)


class PluginHost:
    """Hosts one plugin: lifecycle, services, hooks, metrics."""

    def __init__(self, plugin_id: str, entry: dict[str, Any], settings: dict[str, Any]) -> None:
        self.plugin_id = plugin_id
        self.entry = PluginEntry.model_validate(entry)
        self.settings = settings
        self.metrics = PluginMetrics(plugin_id)
        self.logger = logging.getLogger(f"objectos.plugin.{plugin_id}")
        self.bus = EventBus()
        self.started_at = time.time()
        self._plugin: Plugin | None = None
        self._context: PluginContext | None = None
        self._lifecycle: PluginLifecycle | None = None
        self._build_error: str | None = None

    def _build(self) -> PluginLifecycle:
        if self._lifecycle is not None:
            return self._lifecycle
        cls = load_plugin_class(self.entry.module)
        manifest = cls.manifest
        services = RayServiceDirectory(caller=self.plugin_id)
        self._context = PluginContext(
            plugin_id=self.plugin_id,
            manifest=manifest,
            config=manifest.resolve_config(self.entry.config),
            storage=ServiceBackedStorage(services),
            services=services,
            events=RayEventPublisher(),
            logger=self.logger,
            settings=dict(self.settings),
        )
        self._plugin = cls(self._context)
        self._lifecycle = PluginLifecycle(
            self._plugin,
            hook_timeout_s=float(self.settings.get("hookTimeoutS", 30.0)),
            install_record=KernelInstallRecord(),
        )
        return self._lifecycle

    # -- lifecycle (called by the kernel) ------------------------------------

    async def start(self) -> dict[str, Any]:
        """Install/enable/load the plugin; idempotent while it runs."""
        try:
            lifecycle = self._build()
        except Exception as exc:
            self._build_error = f"{type(exc).__name__}: {exc}"
            raise LifecycleError(
                f"plugin {self.plugin_id} cannot be built: {self._build_error}",
                details={"plugin": self.plugin_id},
            ) from None
        await lifecycle.start()
        assert self._context is not None
        for hook in self._context.hooks:
            self.bus.on(hook.event, hook.handler, priority=hook.priority, owner=self.plugin_id)
        return await self.status()

    async def stop(self) -> dict[str, Any]:
        if self._lifecycle is not None:
            await self._lifecycle.stop()
        self.bus.off_owner(self.plugin_id)
        return await self.status()

    async def status(self) -> dict[str, Any]:
        """Lifecycle snapshot plus the plugin's own readiness (health check)."""
        if self._lifecycle is None:
            return {"state": "registered", "ready": False, "error": self._build_error}
        snapshot = dict(self._lifecycle.snapshot())
        snapshot["pid"] = _pid()
        snapshot["services"] = sorted(self._context.provided_services) if self._context else []
        snapshot["hooks"] = [
            {"event": h.event, "priority": h.priority}
            for h in (self._context.hooks if self._context else [])
        ]
        if snapshot.get("state") == "running" and self._plugin is not None:
            try:
                health = await self._plugin.health()
                snapshot["ready"] = bool(health.get("ready", True))
                snapshot["health"] = health
            except Exception as exc:
                snapshot["ready"] = False
                snapshot["error"] = f"health: {type(exc).__name__}: {exc}"
        else:
            snapshot["ready"] = False
        return snapshot

    # -- what other plugins call ---------------------------------------------

    async def call_service(
        self, service: str, method: str, args: list[Any], kwargs: dict[str, Any], caller: str
    ) -> Any:
        impl = self._context.provided_services.get(service) if self._context else None
        if impl is None:
            raise NotFound(
                f"plugin {self.plugin_id} does not provide service {service!r}",
                details={"service": service},
            )
        fn = getattr(impl, method, None) if not method.startswith("_") else None
        if fn is None or not callable(fn):
            raise NotFound(
                f"service {service!r} has no method {method!r}",
                details={"service": service, "method": method},
            )
        if "caller" in inspect.signature(fn).parameters:
            kwargs = {**kwargs, "caller": caller}
        with self.metrics.time_service_call(service, method):
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        return result

    async def run_hooks(self, event: str, payload: dict[str, Any]) -> list[Any]:
        with self.metrics.time_hook_call(event):
            return await self.bus.trigger(event, payload)

    async def run_hooks_batch(self, events: list[tuple[str, dict[str, Any]]]) -> int:
        """Run the after-hooks of several events in order (one call for a replica's batch).

        A failing handler is logged and does not stop the events after it: the
        writes are committed, there is nothing to veto. Returns how many failed.
        """
        failed = 0
        for event, payload in events:
            try:
                await self.run_hooks(event, payload)
            except Exception:
                failed += 1
                self.logger.warning("after-hook %s failed", event, exc_info=True)
        return failed

    async def run_before_hooks(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.metrics.time_hook_call(event):
            return await self.bus.run_before(event, payload)

    def collect_metrics(self) -> list[dict[str, Any]]:
        return self.metrics.families()


def _pid() -> int:
    import os

    return os.getpid()
