"""Data hooks for HTTP replicas: plugin hooks reached through their host actors.

:class:`KernelDataHooks` is the :class:`~objectos.data.DataHooks` an HTTP
replica gives its in-process DataEngine. It keeps a local copy of the
kernel's hook registry (:meth:`KernelActor.hook_table`) and refreshes it when
the kernel's ``hooks_revision`` moves, checked at most every ``ttl_s``
seconds in a task it owns, never on the request's path. So a read or write on
an object no plugin hooked costs no actor call at all; only a hooked event
calls the hosts that hooked it (``run_before_hooks``, in priority order, each
seeing the payload the previous one returned).

A before-hook that raises vetoes the operation: an ObjectOSError raised in
the plugin reaches the client unchanged (a ValidationError stays a 400).

After-hooks leave the request (ARCHITECTURE.md, "Hot paths stay in-process"):
:meth:`KernelDataHooks.run_after` only queues the event, and one task per replica
delivers the queue in order, each run of events for the same plugin host in one
``run_hooks_batch`` call. A request therefore never waits for an after-hook, and
a burst of writes costs one actor call per host per batch instead of one per
write. The queue is bounded (``max_pending``): when plugins fall that far behind,
``run_after`` waits for room (backpressure) rather than dropping events.
After-hooks cannot undo a committed write, so their errors are logged;
:meth:`KernelDataHooks.flush` waits until everything queued so far was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayTaskError

from actors.factory import get_kernel, get_plugin_host
from objectos.errors import ServiceUnavailable
from objectos.kernel.registry import ServiceRegistry

logger = logging.getLogger("objectos.hooks")


def _unwrap(exc: RayTaskError) -> BaseException:
    """The exception the plugin raised, rather than Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class KernelDataHooks:
    """DataHooks over the kernel's hook registry and plugin host actors."""

    def __init__(
        self,
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 30.0,
        max_pending: int = 10_000,
        max_batch: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ttl_s``: how stale the local registry may get; ``timeout_s``: limit per host
        call; ``max_pending`` after-events queued at most; ``max_batch`` per host call."""
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._registry: ServiceRegistry | None = None
        self._token: str | None = None
        self._checked_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self.host_calls = 0
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._pending: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._delivering: asyncio.Task[None] | None = None

    @property
    def token(self) -> str | None:
        """The kernel's hooks_revision token of the local copy (None before the first load)."""
        return self._token

    async def refresh(self) -> None:
        """Fetch the hook table if the kernel's revision moved (one cheap call if not)."""
        kernel = get_kernel()
        token = await kernel.hooks_revision.remote()
        if self._registry is None or token != self._token:
            table = await kernel.hook_table.remote()
            self._registry = ServiceRegistry.from_dict(table)
            self._token = table["token"]
        self._checked_at = self._clock()

    async def _current(self) -> ServiceRegistry:
        if self._registry is None:
            # The first data operation of a replica waits for the table once.
            try:
                await self.refresh()
            except ValueError:
                raise ServiceUnavailable("the kernel is not running") from None
        elif self._clock() - self._checked_at >= self.ttl_s and (
            self._refreshing is None or self._refreshing.done()
        ):
            self._checked_at = self._clock()
            self._refreshing = asyncio.create_task(self._refresh_quietly())
        assert self._registry is not None
        return self._registry

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the old table stays in use; the next request tries again
            logger.warning("could not refresh the hook table", exc_info=True)

    async def handlers(self, event: str) -> list[tuple[str, int]]:
        """``(plugin id, priority)`` of the plugins to call for ``event``, in order."""
        return (await self._current()).hooks_for(event)

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        for plugin_id, _priority in await self.handlers(event):
            host = get_plugin_host(plugin_id)
            if host is None:
                continue  # stopped since the table was fetched; its hooks are gone with it
            self.host_calls += 1
            try:
                result = await asyncio.wait_for(
                    host.run_before_hooks.remote(event, payload), self.timeout_s
                )
            except RayTaskError as exc:
                raise _unwrap(exc) from None
            if isinstance(result, dict):
                payload = result
        return payload

    async def run_after(self, event: str, payload: dict[str, Any]) -> None:
        """Queue an after-event for the plugins that hooked it (delivered in the background)."""
        if not (await self._current()).hooks_for(event):
            return
        if self._pending is None:
            self._pending = asyncio.Queue(self.max_pending)
        if self._delivering is None or self._delivering.done():
            self._delivering = asyncio.create_task(self._deliver_forever(self._pending))
        await self._pending.put((event, payload))

    async def flush(self) -> None:
        """Wait until every after-event queued so far has been handed to its plugins."""
        if self._pending is not None and self._delivering is not None:
            await self._pending.join()

    async def _deliver_forever(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._deliver(batch)
            except Exception:  # never let one bad batch stop delivery
                logger.exception("after-hook delivery failed")
            finally:
                for _ in batch:
                    queue.task_done()

    async def _deliver(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Hand ``batch`` (in order) to the hosts that hooked its events, one call per run."""
        registry = await self._current()
        runs: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
        for event, payload in batch:
            for plugin_id, _priority in registry.hooks_for(event):
                if runs and runs[-1][0] == plugin_id:
                    runs[-1][1].append((event, payload))
                else:
                    runs.append((plugin_id, [(event, payload)]))
        for plugin_id, events in runs:
            host = get_plugin_host(plugin_id)
            if host is None:
                continue  # stopped since the table was fetched; its hooks are gone with it
            self.host_calls += 1
            try:
                await asyncio.wait_for(host.run_hooks_batch.remote(events), self.timeout_s)
            except Exception as exc:
                cause = _unwrap(exc) if isinstance(exc, RayTaskError) else exc
                logger.warning("after-hooks of %s failed: %s", plugin_id, cause)

    async def close(self, *, flush_timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``flush_timeout_s``), then stop the background tasks."""
        if self._delivering is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), flush_timeout_s)
            self._delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._delivering
            self._delivering = None
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
            self._refreshing = None


__all__ = ["KernelDataHooks"]
