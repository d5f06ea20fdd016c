"""The plugin lifecycle as an explicit state machine.

One :class:`PluginLifecycle` drives one :class:`~objectos.kernel.plugin.Plugin`
instance through its async hooks::

    registered ─► installing ─► installed ─► enabling ─► enabled ─► loading ─► running
                  (on_install      │          (on_enable)           (on_load)     │
                   or on_upgrade)  │                                              ▼
                                   └──────────────────────── disabled ◄── disabling
                                                                 │        (on_disable)
                                                                 ▼
                                            uninstalled ◄── uninstalling (on_uninstall)

Any hook that raises or outlives ``hook_timeout_s`` moves the plugin to
``failed``; ``blocked`` marks a plugin that was not started because a required
dependency failed or is missing. Every move is checked against
:data:`TRANSITIONS`, so an impossible sequence is a :class:`LifecycleError`
naming both states instead of a silently inconsistent plugin.

Whether a plugin was installed before (and in which version) survives restarts
through an injected :class:`InstallRecord`, so a restarted hub does not re-run
``on_install`` and runs ``on_upgrade(previous, new)`` when the version changed.

:func:`start_all` and :func:`stop_all` apply the lifecycle to a resolved graph
(:func:`objectos.kernel.graph.resolve_load_order`): start in dependency order
without starting dependents of a broken plugin, stop in reverse order without
letting one failing stop abort the shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from objectos.errors import LifecycleError
from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest

logger = logging.getLogger("objectos.kernel.lifecycle")

HISTORY_LIMIT = 50
_ERROR_TEXT_LIMIT = 300

T = TypeVar("T")


class PluginState(StrEnum):
    """Where a plugin is in its lifecycle; the value is what APIs report."""

    REGISTERED = "registered"
    INSTALLING = "installing"
    INSTALLED = "installed"
    ENABLING = "enabling"
    ENABLED = "enabled"
    LOADING = "loading"
    RUNNING = "running"
    DISABLING = "disabling"
    DISABLED = "disabled"
    UNINSTALLING = "uninstalling"
    UNINSTALLED = "uninstalled"
    FAILED = "failed"
    BLOCKED = "blocked"


S = PluginState

#: Every legal move. Transient states (…ing) only lead forward or to ``failed``;
#: resting states lead to the next operation, to ``blocked`` or to uninstalling.
TRANSITIONS: Mapping[PluginState, frozenset[PluginState]] = {
    S.REGISTERED: frozenset({S.INSTALLING, S.INSTALLED, S.BLOCKED, S.UNINSTALLING, S.UNINSTALLED}),
    S.INSTALLING: frozenset({S.INSTALLED, S.FAILED}),
    S.INSTALLED: frozenset({S.ENABLING, S.BLOCKED, S.UNINSTALLING, S.UNINSTALLED}),
    S.ENABLING: frozenset({S.ENABLED, S.FAILED}),
    S.ENABLED: frozenset({S.LOADING, S.DISABLING, S.FAILED}),
    S.LOADING: frozenset({S.RUNNING, S.FAILED}),
    S.RUNNING: frozenset({S.DISABLING, S.FAILED}),
    S.DISABLING: frozenset({S.DISABLED, S.FAILED}),
    S.DISABLED: frozenset({S.ENABLING, S.BLOCKED, S.UNINSTALLING, S.UNINSTALLED}),
    S.UNINSTALLING: frozenset({S.UNINSTALLED, S.FAILED}),
    S.UNINSTALLED: frozenset({S.INSTALLING, S.INSTALLED, S.BLOCKED}),
    # From failed: restart (re-checking the install record), release what on_load
    # acquired (disabling), give up on it (blocked) or remove it.
    S.FAILED: frozenset(
        {S.INSTALLING, S.INSTALLED, S.DISABLING, S.BLOCKED, S.UNINSTALLING, S.UNINSTALLED}
    ),
    S.BLOCKED: frozenset({S.INSTALLING, S.INSTALLED, S.UNINSTALLING, S.UNINSTALLED}),
}


def check_transition(plugin_id: str, current: PluginState, target: PluginState) -> None:
    """Raise :class:`LifecycleError` unless ``current -> target`` is in :data:`TRANSITIONS`."""
    if target not in TRANSITIONS[current]:
        raise LifecycleError(
            f"plugin {plugin_id}: illegal lifecycle transition {current} -> {target}",
            details={"plugin": plugin_id, "from": str(current), "to": str(target)},
        )


class InstallRecord(Protocol):
    """Durable memory of which version of each plugin is installed.

    The kernel backs it with its checkpointed KV store; ``None`` means "not
    installed".
    """

    async def get(self, plugin_id: str) -> str | None: ...

    async def set(self, plugin_id: str, version: str | None) -> None: ...


class MemoryInstallRecord:
    """An :class:`InstallRecord` in a dict: for one process, tests and notebooks."""

    def __init__(self, versions: Mapping[str, str] | None = None) -> None:
        """Start with ``versions`` (plugin id → installed version) already recorded."""
        self.versions: dict[str, str] = dict(versions or {})

    async def get(self, plugin_id: str) -> str | None:
        """The recorded version of ``plugin_id``, or None when it is not installed."""
        return self.versions.get(plugin_id)

    async def set(self, plugin_id: str, version: str | None) -> None:
        """Record ``version`` for ``plugin_id``; None forgets it (uninstalled)."""
        if version is None:
            self.versions.pop(plugin_id, None)
        else:
            self.versions[plugin_id] = version


@dataclass(frozen=True)
class Transition:
    """One entry of a plugin's history: the state entered, when, and why if it went wrong."""

    state: PluginState
    at: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"state": str(self.state), "at": self.at, "error": self.error}


class PluginLifecycle:
    """Drives one plugin instance through its hooks, one operation at a time.

    ``start()``, ``stop()`` and ``uninstall()`` are serialised by a lock; a
    second ``start()`` while one is in progress is refused, and a ``start()`` of
    a running plugin returns at once. A hook that raises or times out leaves the
    plugin ``failed`` with :attr:`last_error` set and raises
    :class:`LifecycleError` (its ``__cause__`` is the original exception).
    """

    def __init__(
        self,
        plugin: Plugin,
        install_record: InstallRecord,
        *,
        hook_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        plugin_id: str | None = None,
    ) -> None:
        """Wrap ``plugin``; ``plugin_id`` defaults to its manifest's id.

        ``hook_timeout_s`` limits every hook call (and install-record call);
        ``clock`` stamps the history and :attr:`since`.
        """
        self.plugin = plugin
        self.manifest: PluginManifest = plugin.manifest
        self.plugin_id = plugin_id or self.manifest.id
        self.version = self.manifest.version
        self.hook_timeout_s = float(hook_timeout_s)
        self._record = install_record
        self._clock = clock
        self._lock = asyncio.Lock()
        self._start_in_progress = False
        # True between a successful on_load and the next on_disable: exactly when
        # there is something for on_disable to release, even if the plugin failed since.
        self._loaded = False
        self._state = PluginState.REGISTERED
        self._since = clock()
        self._history: deque[Transition] = deque(
            [Transition(self._state, self._since)], maxlen=HISTORY_LIMIT
        )
        self.last_error: str | None = None

    @property
    def state(self) -> PluginState:
        """The current state."""
        return self._state

    @property
    def since(self) -> float:
        """Clock reading of the last transition."""
        return self._since

    @property
    def history(self) -> list[Transition]:
        """The last :data:`HISTORY_LIMIT` transitions, oldest first."""
        return list(self._history)

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly summary for health and admin APIs."""
        return {
            "plugin": self.plugin_id,
            "state": str(self._state),
            "version": self.version,
            "last_error": self.last_error,
            "since": self._since,
            "history_length": len(self._history),
        }

    async def start(self) -> PluginState:
        """Install or upgrade if needed, then enable and load: ``running``.

        Returns the state (``running``). Raises :class:`LifecycleError` when a
        hook fails, when another ``start()`` is in progress, or when the plugin
        is in a state it cannot start from.
        """
        if self._start_in_progress:
            raise LifecycleError(
                f"plugin {self.plugin_id}: start already in progress",
                details={"plugin": self.plugin_id, "state": str(self._state)},
            )
        self._start_in_progress = True
        try:
            async with self._lock:
                if self._state is S.RUNNING:
                    return self._state
                if self._state is S.FAILED and self._loaded:
                    # Failed while running: release what on_load acquired before loading again.
                    await self._disable()
                if self._state not in (S.INSTALLED, S.DISABLED):
                    await self._install_or_upgrade()
                self._move(S.ENABLING)
                await self._call("on_enable", self.plugin.on_enable)
                self._move(S.ENABLED)
                self._move(S.LOADING)
                await self._call("on_load", self.plugin.on_load)
                self._loaded = True
                self._move(S.RUNNING)
                return self._state
        finally:
            self._start_in_progress = False

    async def stop(self) -> PluginState:
        """Run ``on_disable``: ``disabled``. Does nothing when nothing runs.

        A plugin that failed after loading still gets ``on_disable``, so its
        resources are released; one that failed before loading does not.
        """
        async with self._lock:
            if self._state in (S.ENABLED, S.RUNNING) or (self._state is S.FAILED and self._loaded):
                await self._disable()
            return self._state

    async def uninstall(self) -> PluginState:
        """Stop if needed, run ``on_uninstall`` and forget the installed version.

        A plugin the install record does not know was never installed, so it
        goes straight to ``uninstalled`` without ``on_uninstall``.
        """
        async with self._lock:
            if self._state is S.UNINSTALLED:
                return self._state
            if self._state in (S.ENABLED, S.RUNNING) or (self._state is S.FAILED and self._loaded):
                await self._disable()
            recorded = await self._read_record()
            if recorded is None:
                self._move(S.UNINSTALLED)
                return self._state
            self._move(S.UNINSTALLING)
            await self._call("on_uninstall", self.plugin.on_uninstall)
            await self._call("install record", lambda: self._record.set(self.plugin_id, None))
            self._move(S.UNINSTALLED)
            return self._state

    def block(self, reason: str) -> None:
        """Mark the plugin ``blocked`` (not started) because of ``reason``; runs no hook.

        Blocking a blocked plugin only updates the reason.
        """
        if self._state is not S.BLOCKED:
            self._move(S.BLOCKED, error=_clip(reason))
        self.last_error = _clip(reason)

    def mark_failed(self, reason: str) -> None:
        """Record that a running plugin stopped working (e.g. its health check failed).

        ``stop()`` still runs ``on_disable`` afterwards, and ``start()`` runs it
        before loading again, because ``on_load`` had succeeded.
        """
        self._move(S.FAILED, error=_clip(reason))
        self.last_error = _clip(reason)

    async def _install_or_upgrade(self) -> None:
        recorded = await self._read_record()
        if recorded == self.version:
            self._move(S.INSTALLED)
            return
        self._move(S.INSTALLING)
        if recorded is None:
            await self._call("on_install", self.plugin.on_install)
        else:
            previous = recorded
            await self._call("on_upgrade", lambda: self.plugin.on_upgrade(previous, self.version))
        await self._call("install record", lambda: self._record.set(self.plugin_id, self.version))
        self._move(S.INSTALLED)

    async def _disable(self) -> None:
        self._move(S.DISABLING)
        try:
            await self._call("on_disable", self.plugin.on_disable)
        finally:
            # Even a failed on_disable had its one chance; calling it again on
            # half-released resources would do more harm than good.
            self._loaded = False
        self._move(S.DISABLED)

    async def _read_record(self) -> str | None:
        # Read in a resting state: an unreachable record is the kernel's problem,
        # not the plugin's, so it raises without marking the plugin failed.
        try:
            async with asyncio.timeout(self.hook_timeout_s):
                return await self._record.get(self.plugin_id)
        except Exception as exc:
            raise LifecycleError(
                f"plugin {self.plugin_id}: cannot read the install record: "
                f"{type(exc).__name__}: {exc}",
                details={"plugin": self.plugin_id, "state": str(self._state)},
            ) from exc

    async def _call(self, step: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one hook with the timeout; on any failure move to ``failed`` and raise."""
        scope = asyncio.timeout(self.hook_timeout_s)
        try:
            async with scope:
                return await call()
        except asyncio.CancelledError:
            # The caller gave up (e.g. kernel shutdown); the plugin is left half-way.
            self._fail(step, f"{step} was cancelled")
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                reason = f"{step} timed out after {self.hook_timeout_s}s"
            else:
                reason = f"{step} raised {type(exc).__name__}: {exc}"
            self._fail(step, reason)
            raise LifecycleError(
                f"plugin {self.plugin_id}: {self.last_error}",
                details={
                    "plugin": self.plugin_id,
                    "hook": step,
                    "state": str(self._state),
                    "error": self.last_error,
                },
            ) from exc

    def _fail(self, step: str, reason: str) -> None:
        self._move(S.FAILED, error=_clip(reason))
        self.last_error = _clip(reason)
        logger.warning("plugin %s failed in %s: %s", self.plugin_id, step, self.last_error)

    def _move(self, target: PluginState, error: str | None = None) -> None:
        check_transition(self.plugin_id, self._state, target)
        self._state = target
        self._since = self._clock()
        self._history.append(Transition(target, self._since, error))


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 1] + "…"


async def start_all(
    lifecycles: Mapping[str, PluginLifecycle],
    order: list[str],
    manifests: Mapping[str, PluginManifest],
) -> dict[str, PluginState]:
    """Start plugins in ``order`` (dependencies first); never stop at one failure.

    A plugin whose required dependency is not running afterwards (failed,
    blocked, stopped, or without a lifecycle) is set ``blocked`` with the reason,
    e.g. ``"dependency com.x.storage failed: on_load raised OSError: disk full"``,
    and its hooks never run. Optional dependencies never block. A plugin that is
    already running is left alone. Returns the state of every plugin in ``order``
    that has a lifecycle.
    """
    states: dict[str, PluginState] = {}
    for plugin_id in order:
        lifecycle = lifecycles.get(plugin_id)
        if lifecycle is None:
            continue
        manifest = manifests.get(plugin_id, lifecycle.manifest)
        reasons = [
            reason
            for dep in sorted(manifest.dependencies)
            if (reason := _unusable_dependency(dep, lifecycles.get(dep))) is not None
        ]
        if reasons and lifecycle.state is not S.RUNNING:
            lifecycle.block("; ".join(reasons))
        elif not reasons:
            try:
                await lifecycle.start()
            except Exception:
                # Already recorded as the plugin's state and last_error; its
                # dependents will be blocked with that reason.
                logger.exception("starting plugin %s failed", plugin_id)
        states[plugin_id] = lifecycle.state
    return states


def _unusable_dependency(dep: str, lifecycle: PluginLifecycle | None) -> str | None:
    """Why a dependent cannot start on ``dep``, or None when ``dep`` is running."""
    if lifecycle is None:
        return f"dependency {dep} is not loaded"
    if lifecycle.state is S.RUNNING:
        return None
    if lifecycle.state is S.FAILED:
        return f"dependency {dep} failed: {lifecycle.last_error}"
    if lifecycle.state is S.BLOCKED:
        return f"dependency {dep} is blocked: {lifecycle.last_error}"
    return f"dependency {dep} is {lifecycle.state}"


async def stop_all(
    lifecycles: Mapping[str, PluginLifecycle], order: list[str]
) -> dict[str, PluginState]:
    """Stop plugins in reverse ``order`` (dependents first); keep going past failures.

    A failing ``on_disable`` leaves that plugin ``failed`` (see its
    ``last_error``) and the shutdown continues with the next plugin. Returns
    the state of every plugin in ``order`` that has a lifecycle.
    """
    states: dict[str, PluginState] = {}
    for plugin_id in reversed(order):
        lifecycle = lifecycles.get(plugin_id)
        if lifecycle is None:
            continue
        try:
            await lifecycle.stop()
        except Exception:
            logger.exception("stopping plugin %s failed", plugin_id)
        states[plugin_id] = lifecycle.state
    return states
