"""The kernel actor: the supervisor of a hub, as a detached Ray actor.

It wraps :class:`objectos.kernel.supervisor.Supervisor` with Ray collaborators:
plugin hosts are named detached actors, the checkpoint lives in Ray's GCS
key-value store (as Ray Serve's controller keeps its own), and the
reconciliation loop runs as a task owned by the actor. Ray restarts the actor
after a crash; ``__init__`` then re-attaches to the live plugin hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import ray
from ray.experimental import internal_kv

from actors import factory
from objectos.errors import ObjectOSError
from objectos.kernel.loader import check_hub
from objectos.kernel.registry import ServiceRegistry
from objectos.kernel.supervisor import Status, Supervisor
from objectos.plugins.metrics import KernelMetrics
from objectos.protocol.manifest import HubManifest, PluginEntry

logger = logging.getLogger("objectos.kernel")

KV_NAMESPACE = "objectos"


class GcsCheckpoint:
    """Checkpoint in Ray's GCS KV: survives actor restarts, dies with the cluster."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()

    async def load(self) -> dict[str, Any] | None:
        raw = internal_kv._internal_kv_get(self.key, namespace=KV_NAMESPACE)
        return json.loads(raw) if raw else None

    async def save(self, state: dict[str, Any]) -> None:
        internal_kv._internal_kv_put(
            self.key, json.dumps(state).encode(), overwrite=True, namespace=KV_NAMESPACE
        )


class RayPluginRuntime:
    """PluginRuntime over plugin host actors."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    async def lookup(self, plugin_id: str) -> Any | None:
        return factory.get_plugin_host(plugin_id)

    async def create(self, plugin_id: str, entry: PluginEntry) -> Any:
        return factory.create_plugin_host(plugin_id, entry.model_dump(), self.settings)

    async def start(self, handle: Any) -> dict[str, Any]:
        result: dict[str, Any] = await handle.start.remote()
        return result

    async def stop(self, handle: Any) -> None:
        await handle.stop.remote()

    async def status(self, handle: Any, timeout_s: float) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.wait_for(handle.status.remote(), timeout_s)
        return result

    async def destroy(self, handle: Any) -> None:
        ray.kill(handle, no_restart=True)


class KernelActor:
    """Supervises the plugins of one hub. Every method is idempotent."""

    def __init__(self, hub: dict[str, Any]) -> None:
        self.hub = HubManifest.model_validate(hub)
        checked = check_hub(self.hub)
        self.settings = {
            "hubId": self.hub.id,
            "databaseUrl": self.hub.database.url,
            "dataDir": self.hub.dataDir,
            "hookTimeoutS": self.hub.kernel.hookTimeoutS,
            "metadataDirs": list(self.hub.metadata),
        }
        self.checkpoint = GcsCheckpoint(f"kernel:{self.hub.id}")
        self.installs = GcsCheckpoint(f"installed:{self.hub.id}")
        self.supervisor = Supervisor(
            self.hub, checked.manifests, RayPluginRuntime(self.settings), self.checkpoint
        )
        self.registry = ServiceRegistry()
        self.metrics = KernelMetrics()
        self.started_at = time.time()
        self._installed: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._recovered = asyncio.Event()
        # Owned by the actor for its whole life; Ray restarts the actor (and so
        # the loop) if the process dies.
        self._loop_task = asyncio.get_event_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            self._installed = dict(await self.installs.load() or {})
            await self.supervisor.recover()
            self._sync_registry()
        except Exception:
            logger.exception("kernel recovery failed; continuing with a fresh state")
        self._recovered.set()
        interval = self.hub.kernel.healthCheckIntervalS
        while True:
            try:
                await self.supervisor.reconcile()
                self._sync_registry()
            except Exception:  # the loop never dies
                logger.exception("kernel reconcile pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    def _sync_registry(self) -> None:
        """Derive the service/hook registry from the hosts that are running."""
        for record in self.supervisor.records.values():
            if record.status != Status.RUNNING:
                self.registry.unregister_plugin(record.plugin_id)
                continue
            hooks = [(h["event"], h["priority"]) for h in record.host.get("hooks", [])]
            try:
                self.registry.sync_plugin(record.plugin_id, record.host.get("services", []), hooks)
            except ObjectOSError as exc:
                record.reason = exc.message

    # -- queries ---------------------------------------------------------------

    def pid(self) -> int:
        """The kernel's process id (operators and tests kill it to test recovery)."""
        return os.getpid()

    async def ready(self) -> bool:
        await self._recovered.wait()
        return self.supervisor.ready()

    async def settled(self) -> bool:
        await self._recovered.wait()
        return self.supervisor.settled()

    async def plugins(self) -> list[dict[str, Any]]:
        await self._recovered.wait()
        return self.supervisor.plugins()

    async def status(self) -> dict[str, Any]:
        await self._recovered.wait()
        return {
            "hub": {"id": self.hub.id, "name": self.hub.name, "version": self.hub.version},
            "environment": self.hub.environment,
            "ready": self.supervisor.ready(),
            "order": self.supervisor.order,
            "plugins": self.supervisor.plugins(),
            "startedAt": self.started_at,
            "services": self.registry.services(),
        }

    # The registry is derived from the supervisor's records on every lookup: a
    # plugin that started a moment ago (earlier in the same reconcile pass) is
    # already visible to the dependent that starts right after it.

    async def resolve_service(self, service: str) -> str | None:
        self._sync_registry()
        return self.registry.services().get(service)

    async def services(self) -> dict[str, str]:
        self._sync_registry()
        return self.registry.services()

    async def hooks_for(self, event: str) -> list[tuple[str, int]]:
        self._sync_registry()
        return [(pid, prio) for pid, prio in self.registry.hooks_for(event)]

    def _hooks_token(self) -> str:
        # The registry restarts at revision 0 in a new kernel process: the start time
        # keeps a replica's cache from mistaking the new table for the old one.
        return f"{self.started_at}:{self.registry.revision}"

    async def hooks_revision(self) -> str:
        """Changes whenever a service or hook registration changes (for caches elsewhere)."""
        self._sync_registry()
        return self._hooks_token()

    async def hook_table(self) -> dict[str, Any]:
        """Services and hooks (ServiceRegistry.to_dict) and the ``token`` of hooks_revision."""
        self._sync_registry()
        return {**self.registry.to_dict(), "token": self._hooks_token()}

    async def installed_version(self, plugin_id: str) -> str | None:
        await self._recovered.wait()
        return self._installed.get(plugin_id)

    async def record_installed(self, plugin_id: str, version: str | None) -> None:
        if version is None:
            self._installed.pop(plugin_id, None)
        else:
            self._installed[plugin_id] = version
        await self.installs.save(self._installed)

    async def collect_metrics(self) -> list[list[dict[str, Any]]]:
        """Metric families from the kernel and every live plugin host."""
        self.metrics.observe(self.supervisor.plugins())
        sources = [self.metrics.families()]
        calls = []
        for pid, handle in list(self.supervisor.handles.items()):
            calls.append((pid, handle.collect_metrics.remote()))
        for pid, ref in calls:
            try:
                sources.append(await asyncio.wait_for(ref, 5.0))
            except Exception:
                logger.warning("no metrics from %s", pid)
        return sources

    # -- operator actions --------------------------------------------------------

    async def restart_plugin(self, plugin_id: str) -> dict[str, Any]:
        await self._recovered.wait()
        result = await self.supervisor.restart_plugin(plugin_id)
        self._sync_registry()
        return result

    async def reload_plugin(self, plugin_id: str) -> dict[str, Any]:
        """Hot reload: a fresh host process imports the plugin's code anew."""
        return await self.restart_plugin(plugin_id)

    async def shutdown(self) -> list[str]:
        """Stop every plugin in reverse order (``objectos down``)."""
        await self._recovered.wait()
        errors = await self.supervisor.shutdown()
        self._sync_registry()
        return errors

    def wake(self) -> None:
        self._wake.set()
