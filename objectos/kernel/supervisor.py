"""The kernel's reconciliation loop, without Ray.

The :class:`Supervisor` compares desired state (the hub manifest: which plugins
should run) with actual state (which plugin hosts are alive and running) and
closes the gap one step at a time, like Ray Serve's ``DeploymentStateManager``:

* plugins start in dependency order, each only once every required dependency
  is running; a plugin whose required dependency *failed* is ``blocked`` and the
  reason names the dependency;
* a plugin host that dies (or stops answering health checks) is restarted with
  exponential backoff inside a restart budget (``maxRestarts`` per ``windowS``);
  past the budget it is ``failed`` for good;
* intent is checkpointed *before* acting, so a kernel that restarts
  re-attaches to live hosts by name instead of starting them twice;
* every step catches its own errors: one bad plugin never stops the loop.

All side effects go through two injected collaborators: a :class:`PluginRuntime`
(Ray actors in production, in-memory fakes in tests) and a :class:`Checkpoint`
(Ray's GCS key-value store in production).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from objectos.errors import ObjectOSError, UnknownPlugin
from objectos.kernel.graph import resolve_load_order
from objectos.protocol.manifest import HubManifest, PluginEntry, PluginManifest

logger = logging.getLogger("objectos.kernel")


class Status(StrEnum):
    """What the supervisor knows about one plugin."""

    PENDING = "pending"  # waiting for dependencies
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"  # died; waiting out its backoff
    FAILED = "failed"  # past its restart budget, or it cannot start
    BLOCKED = "blocked"  # a required dependency failed
    STOPPING = "stopping"
    STOPPED = "stopped"  # disabled in the manifest, or the hub is shutting down


class PluginRuntime(Protocol):
    """Where plugin hosts live. Handles are opaque to the supervisor."""

    async def lookup(self, plugin_id: str) -> Any | None:
        """The live host of ``plugin_id``, or None when there is none."""

    async def create(self, plugin_id: str, entry: PluginEntry) -> Any:
        """Create (or get, when one exists by name) the host of ``plugin_id``."""

    async def start(self, handle: Any) -> dict[str, Any]:
        """Run the plugin's start lifecycle; raise on failure. Idempotent."""

    async def stop(self, handle: Any) -> None:
        """Run the plugin's stop lifecycle."""

    async def status(self, handle: Any, timeout_s: float) -> dict[str, Any]:
        """The host's lifecycle snapshot; raise when it is dead or too slow."""

    async def destroy(self, handle: Any) -> None:
        """Kill the host process (used before recreating it)."""


class Checkpoint(Protocol):
    """Durable storage of the supervisor's intent."""

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, state: dict[str, Any]) -> None: ...


@dataclass
class PluginRecord:
    """The supervisor's bookkeeping for one plugin."""

    plugin_id: str
    manifest: PluginManifest
    entry: PluginEntry
    status: Status = Status.PENDING
    reason: str | None = None
    restarts_total: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    attempts: int = 0  # consecutive failed starts/crashes since last healthy start
    next_attempt_at: float = 0.0
    since: float = field(default_factory=time.time)
    host: dict[str, Any] = field(default_factory=dict)  # last lifecycle snapshot

    def set_status(self, status: Status, reason: str | None = None) -> None:
        if status != self.status:
            self.since = time.time()
        self.status = status
        self.reason = reason

    def to_dict(self, order: int) -> dict[str, Any]:
        return {
            "id": self.plugin_id,
            "name": self.manifest.name or self.plugin_id,
            "version": self.manifest.version,
            "status": self.status.value,
            "ready": self.status == Status.RUNNING,
            "reason": self.reason,
            "restarts": self.restarts_total,
            "order": order,
            "since": self.since,
            "dependencies": dict(self.manifest.dependencies),
            "optionalDependencies": dict(self.manifest.optionalDependencies),
            "lifecycle": self.host,
        }


class Supervisor:
    """Keeps the plugins of a hub manifest running. See the module docstring."""

    def __init__(
        self,
        hub: HubManifest,
        manifests: Mapping[str, PluginManifest],
        runtime: PluginRuntime,
        checkpoint: Checkpoint,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.runtime = runtime
        self.checkpoint = checkpoint
        self.clock = clock
        self.policy = hub.kernel.restart
        enabled = {pid: m for pid, m in manifests.items() if hub.plugins[pid].enabled}
        # Raises DependencyError before anything starts.
        self.order = resolve_load_order(enabled)
        self.records: dict[str, PluginRecord] = {
            pid: PluginRecord(pid, manifests[pid], hub.plugins[pid]) for pid in self.order
        }
        for pid, entry in hub.plugins.items():
            if not entry.enabled:
                record = PluginRecord(pid, manifests[pid], entry, status=Status.STOPPED)
                record.reason = "disabled in the manifest"
                self.records[pid] = record
        self.handles: dict[str, Any] = {}
        self.shutting_down = False
        self._lock = asyncio.Lock()

    # -- checkpointing -------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "shuttingDown": self.shutting_down,
            "plugins": {
                pid: {
                    "status": r.status.value,
                    "reason": r.reason,
                    "restartsTotal": r.restarts_total,
                    "attempts": r.attempts,
                }
                for pid, r in self.records.items()
            },
        }

    async def _save(self) -> None:
        try:
            await self.checkpoint.save(self._snapshot())
        except Exception:  # the loop must survive a flaky checkpoint store
            logger.exception("kernel checkpoint failed")

    async def recover(self) -> None:
        """Re-attach to live hosts after a kernel restart; never start duplicates."""
        saved = await self.checkpoint.load()
        if saved:
            self.shutting_down = bool(saved.get("shuttingDown"))
            for pid, state in saved.get("plugins", {}).items():
                record = self.records.get(pid)
                if record is None:
                    continue
                record.restarts_total = int(state.get("restartsTotal", 0))
                record.attempts = int(state.get("attempts", 0))
                if state.get("status") in (Status.FAILED, Status.BLOCKED):
                    record.set_status(Status(state["status"]), state.get("reason"))
        for pid in self.order:
            record = self.records[pid]
            try:
                handle = await self.runtime.lookup(pid)
                if handle is None:
                    continue
                snapshot = await self.runtime.status(handle, self.hub.kernel.healthCheckTimeoutS)
            except Exception as exc:
                logger.info("plugin %s not re-attached: %s", pid, exc)
                continue
            self.handles[pid] = handle
            record.host = snapshot
            if snapshot.get("state") == "running":
                record.set_status(Status.RUNNING)
                logger.info("re-attached to running plugin %s", pid)

    # -- the loop ------------------------------------------------------------

    async def reconcile(self) -> None:
        """One pass: start what should run, check health, restart the dead."""
        async with self._lock:
            if self.shutting_down:
                return
            for pid in self.order:
                try:
                    await self._reconcile_plugin(self.records[pid])
                except Exception as exc:  # one plugin never stops the loop
                    logger.exception("reconciling %s failed", pid)
                    self.records[pid].reason = f"kernel error: {exc}"
            await self._save()

    async def _reconcile_plugin(self, record: PluginRecord) -> None:
        if record.status in (Status.FAILED, Status.STOPPED):
            return
        blocker = self._failed_dependency(record)
        if blocker is not None:
            if record.status != Status.BLOCKED:
                dep = self.records[blocker]
                record.set_status(
                    Status.BLOCKED, f"dependency {blocker} {dep.status.value}: {dep.reason}"
                )
                await self._stop_host(record)
            return
        if record.status == Status.BLOCKED:
            record.set_status(Status.PENDING)
        if record.status == Status.RUNNING:
            await self._check_health(record)
            return
        if not self._dependencies_running(record):
            record.set_status(Status.PENDING, "waiting for dependencies")
            return
        if self.clock() < record.next_attempt_at:
            return
        await self._start(record)

    def _required(self, record: PluginRecord) -> list[str]:
        return list(record.manifest.dependencies)

    def _optional_present(self, record: PluginRecord) -> list[str]:
        return [d for d in record.manifest.optionalDependencies if d in self.records]

    def _failed_dependency(self, record: PluginRecord) -> str | None:
        for dep in self._required(record):
            if self.records[dep].status in (Status.FAILED, Status.BLOCKED, Status.STOPPED):
                return dep
        return None

    def _dependencies_running(self, record: PluginRecord) -> bool:
        for dep in self._required(record):
            if self.records[dep].status != Status.RUNNING:
                return False
        # Optional dependencies order the start but never block it: wait only
        # while they are still on their way up.
        for dep in self._optional_present(record):
            if self.records[dep].status in (Status.PENDING, Status.STARTING):
                return False
        return True

    async def _start(self, record: PluginRecord) -> None:
        record.set_status(Status.STARTING)
        await self._save()  # intent first: a kernel that dies now knows what it was doing
        try:
            handle = self.handles.get(record.plugin_id)
            if handle is None:
                handle = await self.runtime.create(record.plugin_id, record.entry)
                self.handles[record.plugin_id] = handle
            record.host = await self.runtime.start(handle)
        except Exception as exc:
            await self._failure(record, f"start failed: {_describe(exc)}")
            return
        record.attempts = 0
        record.set_status(Status.RUNNING)
        logger.info("plugin %s running", record.plugin_id)

    async def _check_health(self, record: PluginRecord) -> None:
        handle = self.handles.get(record.plugin_id)
        try:
            if handle is None:
                raise RuntimeError("no host")
            record.host = await self.runtime.status(handle, self.hub.kernel.healthCheckTimeoutS)
            if record.host.get("state") != "running":
                raise RuntimeError(f"host reports {record.host.get('state')}")
            if record.host.get("ready") is False:
                record.reason = record.host.get("error") or "not ready"
            else:
                record.reason = None
        except Exception as exc:
            await self._failure(record, f"health check failed: {_describe(exc)}")

    async def _failure(self, record: PluginRecord, reason: str) -> None:
        """A start failed or a host died: schedule a restart, or give up."""
        logger.warning("plugin %s: %s", record.plugin_id, reason)
        handle = self.handles.pop(record.plugin_id, None)
        if handle is not None:
            try:
                await self.runtime.destroy(handle)
            except Exception:
                logger.debug("destroying %s failed", record.plugin_id, exc_info=True)
        now = self.clock()
        window = self.policy.windowS
        while record.restart_times and now - record.restart_times[0] > window:
            record.restart_times.popleft()
        if len(record.restart_times) >= self.policy.maxRestarts:
            record.set_status(
                Status.FAILED,
                f"{reason} (restart budget of {self.policy.maxRestarts} in {window:g}s exhausted)",
            )
            return
        record.restart_times.append(now)
        record.restarts_total += 1
        record.attempts += 1
        delay = min(
            self.policy.backoffInitialS * 2 ** (record.attempts - 1), self.policy.backoffMaxS
        )
        record.next_attempt_at = now + delay
        record.set_status(Status.RESTARTING, f"{reason}; restarting in {delay:.1f}s")

    async def _stop_host(self, record: PluginRecord) -> None:
        handle = self.handles.pop(record.plugin_id, None)
        if handle is None:
            return
        try:
            await self.runtime.stop(handle)
        except Exception:
            logger.warning("stopping %s failed", record.plugin_id, exc_info=True)
        try:
            await self.runtime.destroy(handle)
        except Exception:
            logger.debug("destroying %s failed", record.plugin_id, exc_info=True)

    # -- operator actions ----------------------------------------------------

    async def restart_plugin(self, plugin_id: str) -> dict[str, Any]:
        """Operator restart (or hot reload): a fresh host with a fresh budget."""
        record = self._record(plugin_id)
        async with self._lock:
            await self._stop_host(record)
            record.restart_times.clear()
            record.attempts = 0
            record.next_attempt_at = 0.0
            record.restarts_total += 1
            record.set_status(Status.PENDING, "restart requested")
            # Dependents that were blocked on this plugin may start again.
            for other in self.records.values():
                if other.status == Status.BLOCKED:
                    other.set_status(Status.PENDING)
            await self._save()
        await self.reconcile()
        return record.to_dict(self.order.index(plugin_id))

    async def shutdown(self) -> list[str]:
        """Stop every plugin in reverse dependency order; never aborts midway."""
        async with self._lock:
            self.shutting_down = True
            await self._save()
            errors: list[str] = []
            for pid in reversed(self.order):
                record = self.records[pid]
                handle = self.handles.pop(pid, None)
                if handle is None:
                    record.set_status(Status.STOPPED, "hub shut down")
                    continue
                record.set_status(Status.STOPPING)
                try:
                    await self.runtime.stop(handle)
                except Exception as exc:
                    errors.append(f"{pid}: {_describe(exc)}")
                try:
                    await self.runtime.destroy(handle)
                except Exception as exc:
                    errors.append(f"{pid}: {_describe(exc)}")
                record.set_status(Status.STOPPED, "hub shut down")
            await self._save()
            return errors

    # -- views ---------------------------------------------------------------

    def _record(self, plugin_id: str) -> PluginRecord:
        try:
            return self.records[plugin_id]
        except KeyError:
            raise UnknownPlugin(
                f"unknown plugin {plugin_id!r}", details={"plugin": plugin_id}
            ) from None

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin, in dependency order (disabled ones last)."""
        ordered = [*self.order, *[p for p in self.records if p not in self.order]]
        return [self.records[pid].to_dict(i) for i, pid in enumerate(ordered)]

    def ready(self) -> bool:
        """True when every enabled plugin is running."""
        return all(self.records[pid].status == Status.RUNNING for pid in self.order)

    def settled(self) -> bool:
        """True when no plugin is still on its way somewhere (for `objectos up`)."""
        return all(
            self.records[pid].status in (Status.RUNNING, Status.FAILED, Status.BLOCKED)
            for pid in self.order
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ObjectOSError):
        return exc.message
    text = str(exc).strip().splitlines()
    # Ray wraps remote errors in long multi-line messages; keep the last line,
    # which carries the original exception.
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
