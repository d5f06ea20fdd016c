"""The kernel's reconciliation loop, without Ray.

The :class:`Supervisor` compares desired state (the hub manifest: which plugins
should run) with actual state (which plugin hosts are alive and running) and
closes the gap one step at a time, like Ray Serve's ``DeploymentStateManager``:

* plugins start in dependency order, each only once every required dependency
  is running; a plugin whose required dependency *failed* is ``blocked`` and the
  reason names the dependency;
* a plugin host that dies (or stops answering health checks) is restarted with
  exponential backoff inside a restart budget (``maxRestarts`` per ``windowS``);
  past the budget it is ``failed`` for good. Both the budget and the backoff
  derive from one list, the times of the restarts inside the window, so a host
  that starts fine and then keeps dying slows down like one that cannot start;
* intent is checkpointed *before* acting, so a kernel that restarts
  re-attaches to live hosts by name instead of starting them twice, and keeps
  the restart budgets, the pending backoffs and the failed plugins it knew;
* every step catches its own errors and every start or stop of a host has a
  time limit: one bad plugin never stops (or hangs) the loop.

All side effects go through two injected collaborators: a :class:`PluginRuntime`
(Ray actors in production, in-memory fakes in tests) and a :class:`Checkpoint`
(Ray's GCS key-value store in production).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from objectos.errors import ObjectOSError, UnknownPlugin
from objectos.kernel.graph import resolve_load_order
from objectos.protocol.manifest import HubManifest, PluginEntry, PluginManifest

logger = logging.getLogger("objectos.kernel")

T = TypeVar("T")

# How many lifecycle hooks a host runs on start (install or upgrade, enable,
# load), each bounded by hookTimeoutS inside the host.
_START_HOOKS = 3


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
    # Clock times of the restarts inside the restart window: the budget and the
    # backoff are both derived from it (no separate counter to drift).
    restart_times: deque[float] = field(default_factory=deque)
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Supervise the plugins of ``hub``; ``manifests`` holds one per plugin id.

        ``clock`` times backoffs and restart windows. Its readings are
        checkpointed and compared by the next kernel process, which Ray may
        start on another node, so the default is wall-clock time rather than
        a per-machine monotonic clock.

        Raises:
            DependencyError: the enabled plugins do not resolve (see
                :func:`~objectos.kernel.graph.resolve_load_order`).
        """
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
                    "restartTimes": list(r.restart_times),
                    "nextAttemptAt": r.next_attempt_at,
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
        """Re-attach to live hosts after a kernel restart; never start duplicates.

        Restores what the checkpoint knew (restart budgets, pending backoffs,
        failed and blocked plugins, a shutdown in progress), adopts every live
        host found by name, and treats a plugin that was running but whose host
        is gone, dead or no longer running as crashed: it is restarted after its
        backoff, and the restart counts against its budget. Live hosts of
        disabled plugins are stopped.
        """
        async with self._lock:
            saved = await self._load()
            self.shutting_down = bool(saved.get("shuttingDown"))
            was_running: set[str] = set()
            for pid, state in dict(saved.get("plugins") or {}).items():
                record = self.records.get(pid)
                if record is None or pid not in self.order:
                    continue
                try:
                    if state.get("status") == Status.RUNNING:
                        was_running.add(pid)
                    self._restore(record, state)
                except Exception:  # one bad entry must not cost the others
                    logger.warning("checkpoint entry of %s ignored", pid, exc_info=True)
            for pid in self.order:
                try:
                    await self._reattach(self.records[pid], pid in was_running)
                except Exception:
                    logger.exception("re-attaching %s failed", pid)
            for record in self.records.values():
                if record.plugin_id not in self.order:
                    await self._stop_leftover(record)
            await self._save()

    async def _load(self) -> dict[str, Any]:
        try:
            saved = await self.checkpoint.load()
        except Exception:  # live hosts are still worth finding without it
            logger.exception("kernel checkpoint unreadable; recovering from live hosts only")
            return {}
        return saved if isinstance(saved, dict) else {}

    def _restore(self, record: PluginRecord, state: Mapping[str, Any]) -> None:
        now = self.clock()
        # Parse everything before assigning anything: a bad entry changes nothing.
        restarts_total = int(state.get("restartsTotal", 0))
        # A checkpoint written on another node may run a little ahead of our clock.
        times = [min(float(t), now) for t in state.get("restartTimes", [])]
        next_attempt_at = min(float(state.get("nextAttemptAt", 0.0)), now + self.policy.backoffMaxS)
        record.restarts_total = restarts_total
        record.restart_times = deque(sorted(t for t in times if now - t <= self.policy.windowS))
        record.next_attempt_at = next_attempt_at
        # Transient states are derived again from the live hosts; these are not.
        kept = {Status.RESTARTING, Status.FAILED, Status.BLOCKED}
        if self.shutting_down:
            kept |= {Status.STOPPING, Status.STOPPED}
        status = state.get("status")
        if status in kept:
            record.set_status(Status(status), state.get("reason"))

    async def _reattach(self, record: PluginRecord, was_running: bool) -> None:
        pid = record.plugin_id
        try:
            handle = await self.runtime.lookup(pid)
        except Exception as exc:
            # Unknown rather than dead: a later start gets the host by name if it exists.
            logger.info("plugin %s not looked up: %s", pid, exc)
            return
        lost = "no live host"
        if handle is not None:
            try:
                record.host = await self.runtime.status(handle, self.hub.kernel.healthCheckTimeoutS)
            except Exception as exc:
                lost = _describe(exc)
                await self._destroy(record, handle)
            else:
                self.handles[pid] = handle
                state = record.host.get("state")
                if state == "running":
                    record.set_status(Status.RUNNING)
                    logger.info("re-attached to running plugin %s", pid)
                    return
                lost = f"host reports {state}"
        if was_running and not self.shutting_down:
            await self._failure(record, f"host lost while the kernel was down: {lost}")

    async def _stop_leftover(self, record: PluginRecord) -> None:
        """Stop a live host of a plugin that the manifest no longer enables."""
        try:
            handle = await self.runtime.lookup(record.plugin_id)
        except Exception:
            logger.info("plugin %s not looked up", record.plugin_id, exc_info=True)
            return
        if handle is not None:
            logger.info("stopping the host of disabled plugin %s", record.plugin_id)
            self.handles[record.plugin_id] = handle
            await self._stop_host(record)

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
            dep = self.records[blocker]
            record.set_status(
                Status.BLOCKED, f"dependency {blocker} {dep.status.value}: {dep.reason}"
            )
            await self._stop_host(record)  # a no-op once it is stopped
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
            record.host = await self._within(
                self._start_timeout_s(), self.runtime.start(handle), "start"
            )
        except Exception as exc:
            await self._failure(record, f"start failed: {_describe(exc)}")
            return
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
            await self._destroy(record, handle)
        now = self.clock()
        window = self.policy.windowS
        while record.restart_times and now - record.restart_times[0] > window:
            record.restart_times.popleft()
        recent = len(record.restart_times)
        if recent >= self.policy.maxRestarts:
            record.set_status(
                Status.FAILED,
                f"{reason} (restart budget of {self.policy.maxRestarts} in {window:g}s exhausted)",
            )
            return
        # The n-th restart inside the window waits initial * 2**(n-1), capped.
        delay = min(self.policy.backoffInitialS * 2**recent, self.policy.backoffMaxS)
        record.restart_times.append(now)
        record.restarts_total += 1
        record.next_attempt_at = now + delay
        record.set_status(Status.RESTARTING, f"{reason}; restarting in {delay:.1f}s")

    async def _stop_host(self, record: PluginRecord) -> None:
        handle = self.handles.pop(record.plugin_id, None)
        if handle is None:
            return
        try:
            await self._within(self._stop_timeout_s(), self.runtime.stop(handle), "stop")
        except Exception:
            logger.warning("stopping %s failed", record.plugin_id, exc_info=True)
        await self._destroy(record, handle)

    async def _destroy(self, record: PluginRecord, handle: Any) -> None:
        try:
            await self.runtime.destroy(handle)
        except Exception:
            logger.debug("destroying %s failed", record.plugin_id, exc_info=True)

    def _start_timeout_s(self) -> float:
        # The host bounds each hook itself; the slack covers creating the
        # process. A start slower than this is a host that is stuck or was never
        # scheduled, and must not hold up the whole loop.
        kernel = self.hub.kernel
        return _START_HOOKS * kernel.hookTimeoutS + kernel.healthCheckTimeoutS

    def _stop_timeout_s(self) -> float:
        kernel = self.hub.kernel
        return kernel.hookTimeoutS + kernel.healthCheckTimeoutS

    @staticmethod
    async def _within(timeout_s: float, call: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(call, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{what} took longer than {timeout_s:g}s") from None

    # -- operator actions ----------------------------------------------------

    async def restart_plugin(self, plugin_id: str) -> dict[str, Any]:
        """Operator restart (or hot reload): a fresh host with a fresh budget.

        Dependents blocked on the plugin start again once it runs. A disabled
        plugin, or any plugin while the hub shuts down, is left as it is (its
        row says why).

        Raises:
            UnknownPlugin: ``plugin_id`` is not in the manifest.
        """
        record = self._record(plugin_id)
        async with self._lock:
            if plugin_id not in self.order or self.shutting_down:
                return self._row(plugin_id)
            record.restart_times.clear()
            record.next_attempt_at = 0.0
            record.restarts_total += 1
            record.set_status(Status.PENDING, "restart requested")
            await self._save()  # intent first, then act
            await self._stop_host(record)
        await self.reconcile()
        return self._row(plugin_id)

    async def shutdown(self) -> list[str]:
        """Stop every plugin in reverse dependency order; never aborts midway."""
        async with self._lock:
            self.shutting_down = True
            await self._save()
            errors: list[str] = []
            for pid in reversed(self.order):
                record = self.records[pid]
                handle = self.handles.get(pid)
                if handle is None:
                    record.set_status(Status.STOPPED, "hub shut down")
                    continue
                record.set_status(Status.STOPPING)
                try:
                    await self._within(self._stop_timeout_s(), self.runtime.stop(handle), "stop")
                except Exception as exc:
                    errors.append(f"{pid}: {_describe(exc)}")
                try:
                    await self.runtime.destroy(handle)
                except Exception as exc:
                    errors.append(f"{pid}: {_describe(exc)}")
                # Forgotten only now, so that a shutdown interrupted above and
                # retried still finds this host.
                self.handles.pop(pid, None)
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

    def _listing_order(self) -> list[str]:
        return [*self.order, *[p for p in self.records if p not in self.order]]

    def _row(self, plugin_id: str) -> dict[str, Any]:
        return self.records[plugin_id].to_dict(self._listing_order().index(plugin_id))

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin, in dependency order (disabled ones last)."""
        return [self.records[pid].to_dict(i) for i, pid in enumerate(self._listing_order())]

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
