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
delivers the queue in batches (up to ``max_batch`` events). A batch is split into
one ordered list per plugin host, and the hosts get their lists concurrently, in
``run_hooks_batch`` calls of at most ``max_call`` events each. A request therefore
never waits for an after-hook, and a burst of writes costs one actor call per
host per ``max_call`` events instead of one per write.

**Order.** Each host sees its events in queue order: its calls are sent one after
the other, and the next batch starts only when every host is done with this one.
A call that exceeds ``timeout_s`` is cancelled (an async actor's task is
cancelled like an asyncio task) and *waited for* until Ray reports it finished,
so a host never runs two of our calls at once and a slow plugin cannot see events
out of order; the rest of its list follows afterwards.

The queue is bounded (``max_pending``): when plugins fall that far behind,
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

import ray
from ray.exceptions import RayTaskError

from actors.factory import get_kernel, get_plugin_host
from objectos.errors import ServiceUnavailable
from objectos.kernel.registry import ServiceRegistry

logger = logging.getLogger("objectos.hooks")


def _unwrap(exc: RayTaskError) -> BaseException:
    """The exception the plugin raised, rather than Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _cancel_call(call: Any) -> None:
    """Cancel a host call that timed out (``ray.cancel``; anything else is left to run)."""
    if isinstance(call, ray.ObjectRef):
        ray.cancel(call)


class KernelDataHooks:
    """DataHooks over the kernel's hook registry and plugin host actors."""

    def __init__(
        self,
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 30.0,
        max_pending: int = 10_000,
        max_batch: int = 500,
        max_call: int = 50,
        clock: Callable[[], float] = time.monotonic,
        registry: ServiceRegistry | None = None,
        hosts: Callable[[str], Any | None] | None = None,
        cancel: Callable[[Any], None] = _cancel_call,
    ) -> None:
        """``ttl_s``: how stale the local registry may get; ``timeout_s``: limit per host
        call; ``max_pending`` after-events queued at most; ``max_batch`` events taken
        from the queue at once; ``max_call`` after-events per ``run_hooks_batch`` call.

        ``registry``: a fixed hook table, never refreshed from the kernel; ``hosts``
        finds a plugin's host actor (None once it stopped; default: by its actor
        name) and ``cancel`` cancels a
        call that timed out (what ``.remote()`` returned). Embedded hubs and tests
        use these; a replica keeps the defaults.
        """
        if max_batch < 1 or max_call < 1:
            raise ValueError("max_batch and max_call must be at least 1")
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._fixed = registry is not None
        self._hosts = hosts
        self._cancel = cancel
        self.max_call = max_call
        self._registry: ServiceRegistry | None = registry
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
        elif self._fixed:
            pass
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

    def _host(self, plugin_id: str) -> Any | None:
        return (self._hosts or get_plugin_host)(plugin_id)

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        for plugin_id, _priority in await self.handlers(event):
            host = self._host(plugin_id)
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
        """Hand ``batch`` to the hosts that hooked its events: one ordered list per host."""
        registry = await self._current()
        by_plugin: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for event, payload in batch:
            for plugin_id, _priority in registry.hooks_for(event):
                by_plugin.setdefault(plugin_id, []).append((event, payload))
        await asyncio.gather(*(self._deliver_to(p, events) for p, events in by_plugin.items()))

    async def _deliver_to(self, plugin_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``events`` to one host, in order, ``max_call`` per call, one call at a time."""
        host = self._host(plugin_id)
        if host is None:
            return  # stopped since the table was fetched; its hooks are gone with it
        for start in range(0, len(events), self.max_call):
            self.host_calls += 1
            call = host.run_hooks_batch.remote(events[start : start + self.max_call])
            done: asyncio.Future[Any] = asyncio.ensure_future(call)
            try:
                await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
            except TimeoutError:
                logger.warning(
                    "after-hooks of %s took over %.3g s; cancelling the call",
                    plugin_id,
                    self.timeout_s,
                )
                self._cancel(call)
                await self._settle(plugin_id, done)
            except Exception as exc:
                cause = _unwrap(exc) if isinstance(exc, RayTaskError) else exc
                logger.warning("after-hooks of %s failed: %s", plugin_id, cause)

    async def _settle(self, plugin_id: str, future: asyncio.Future[Any]) -> None:
        """Wait until a cancelled call has really finished (so the next one cannot overtake it).

        Ray answers a cancelled call once the host's task ended (TaskCancelledError),
        or with ActorDiedError when the kernel restarts a wedged host; meanwhile this
        host's later events wait, and the log says so every ``timeout_s``.
        """
        while True:
            finished, _ = await asyncio.wait({future}, timeout=self.timeout_s)
            if finished:
                break
            logger.warning("after-hooks of %s: still waiting for a cancelled call", plugin_id)
        if not future.cancelled() and future.exception() is not None:
            logger.debug("cancelled after-hooks of %s ended with %r", plugin_id, future.exception())

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
