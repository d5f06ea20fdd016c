"""Data hooks for HTTP replicas: plugin hooks reached through their host actors.

:class:`KernelDataHooks` is the :class:`~objectos.data.DataHooks` an HTTP
replica gives its in-process DataEngine. It keeps a local copy of the
kernel's hook registry (:meth:`KernelActor.hook_table`) and refreshes it when
the kernel's ``hooks_revision`` moves, checked at most every ``ttl_s``
seconds in a task it owns, never on the request's path. So a read or write on
an object no plugin hooked costs no actor call at all; only a hooked event
calls the hosts that hooked it (``run_before_hooks``, in priority order, each
seeing the payload the previous one returned; ``run_hooks`` after commit).

A before-hook that raises vetoes the operation: an ObjectOSError raised in
the plugin reaches the client unchanged (a ValidationError stays a 400).
After-hooks cannot undo a committed write, so their errors are logged.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ttl_s``: how stale the local registry may get; ``timeout_s``: limit per host call."""
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._registry: ServiceRegistry | None = None
        self._token: str | None = None
        self._checked_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self.host_calls = 0

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
        for plugin_id, _priority in await self.handlers(event):
            host = get_plugin_host(plugin_id)
            if host is None:
                continue
            self.host_calls += 1
            try:
                await asyncio.wait_for(host.run_hooks.remote(event, payload), self.timeout_s)
            except Exception as exc:
                cause = _unwrap(exc) if isinstance(exc, RayTaskError) else exc
                logger.warning("after-hook %s of %s failed: %s", event, plugin_id, cause)

    async def close(self) -> None:
        """Stop a refresh in flight."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
            self._refreshing = None


__all__ = ["KernelDataHooks"]
