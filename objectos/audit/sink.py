"""Where events that are not writes go: sign-ins, permission denials, audited reads.

Writes are audited from the change log (:mod:`objectos.audit.projection`);
everything else has no change-log row, so the code that sees it hands an
:class:`~objectos.audit.events.AuditEvent` to an :class:`AuditSink`::

    sink = SQLAuditSink(AuditStore(database))
    await sink.start()
    identity = IdentityService(..., on_event=auth_event_recorder(sink))
    await sink.record(AuditEvent.new("permission.denied", actor=..., details=...))
    await sink.stop()                  # flushes what is buffered

:class:`SQLAuditSink` appends to ``_audit_events`` in batches: ``record``
only puts the event in a buffer (no I/O on the request path) and a task the
sink owns writes the buffer every ``flush_interval_s``, or sooner once
``max_batch`` events wait. **Durability window, honestly:** an event passed
to ``record`` is durable once its batch commits, at most about
``flush_interval_s`` later; if the process is killed (``kill -9``, OOM)
before that, the events of the last interval are lost — for sign-ins and
denials, which have no change-log row to replay from. ``stop()`` flushes
everything, so an orderly shutdown loses nothing. Callers that must not
lose an event use :meth:`SQLAuditSink.record_durably`, which returns only
after the commit (sharing the transaction with whatever else is buffered).

When the database fails, buffered events stay and are retried with
backoff; the buffer is bounded (``max_pending``): past it, ``record`` waits
briefly for room and then drops the event with an error log and a count in
:meth:`SQLAuditSink.status` rather than growing without limit or blocking a
sign-in forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from objectos.audit.events import AuditEvent
from objectos.audit.store import AuditStore
from objectos.kernel.plugin import ServiceDirectory

if TYPE_CHECKING:  # the identity stack (argon2, authlib) is not needed to record events
    from objectos.security.identity import AuthEvent

logger = logging.getLogger("objectos.audit")

AUDIT_SERVICE = "audit"
"""Name under which the audit plugin registers its service."""

MAX_BACKOFF_S = 10.0


@runtime_checkable
class AuditSink(Protocol):
    """Takes audit events for non-write facts; never raises into the caller's request."""

    async def record(self, event: AuditEvent) -> None:
        """Accept ``event`` (see the implementation for when it becomes durable)."""
        ...


class SQLAuditSink:
    """Batched appends to the audit table (see the module docstring for durability)."""

    def __init__(
        self,
        store: AuditStore,
        *,
        flush_interval_s: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 50_000,
        overflow_wait_s: float = 1.0,
        autostart: bool = False,
    ) -> None:
        """Buffer at most ``max_pending`` events; write up to ``max_batch`` per transaction.

        ``autostart`` starts the flush task on the first ``record`` (for owners
        built outside an event loop, such as a Serve replica's constructor);
        ``stop()`` is still theirs to call.
        """
        if flush_interval_s <= 0 or max_batch < 1 or max_pending < max_batch:
            raise ValueError("need flush_interval_s > 0 and 1 <= max_batch <= max_pending")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.overflow_wait_s = overflow_wait_s
        self.autostart = autostart
        self._pending: deque[tuple[AuditEvent, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the flush task (once)."""
        if self._started:
            raise RuntimeError("this audit sink was already started")
        self._started = True
        self._task = asyncio.create_task(self._run(), name="audit-sink")

    async def stop(self) -> None:
        """Write everything buffered, then stop the flush task."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- recording --------------------------------------------------------------------------

    async def record(self, event: AuditEvent) -> None:
        """Buffer ``event``; it is written within about ``flush_interval_s``."""
        await self._enqueue(event, None)

    async def record_durably(self, event: AuditEvent) -> None:
        """Buffer ``event`` and return once it is committed (raises if the write fails)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if await self._enqueue(event, done):
            self._wake.set()  # someone is waiting: do not wait out the interval
            await done

    async def flush(self) -> None:
        """Return once the buffer is empty.

        While the database fails the buffer cannot empty, so this waits for
        it to come back; bound it with ``asyncio.timeout`` where that matters.
        """
        if not self._pending:
            return
        self._wake.set()
        await self._drained.wait()

    async def _enqueue(self, event: AuditEvent, done: asyncio.Future[None] | None) -> bool:
        if self.autostart and not self._started:
            await self.start()
        if self._task is None or self._stopping:
            raise RuntimeError("the audit sink is not running")
        if len(self._pending) >= self.max_pending:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.overflow_wait_s)
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                logger.error(
                    "audit sink full (%d pending, %s); dropped %s event",
                    len(self._pending),
                    self.last_error or "database slow",
                    event.action,
                )
                if done is not None:
                    done.set_exception(RuntimeError("the audit sink is full"))
                    await done
                return False
        self._pending.append((event, done))
        self._drained.clear()
        if len(self._pending) >= self.max_batch:
            self._wake.set()
        return True

    # -- the flush loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                while self._pending:
                    await self._write_batch()
                failures = 0
                self.last_error = None
                self._drained.set()
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("audit sink write failed; retrying", exc_info=True)
                if self._stopping and failures >= 3:
                    logger.error("audit sink stopped with %d unwritten events", len(self._pending))
                    self._drained.set()
                    return
                await asyncio.sleep(min(self.flush_interval_s * 2**failures, MAX_BACKOFF_S))
                continue
            if self._stopping:
                return

    async def _write_batch(self) -> None:
        batch = [self._pending[i] for i in range(min(self.max_batch, len(self._pending)))]
        try:
            await self.store.append([event for event, _ in batch])
        except Exception as exc:
            # Waiters learn about the failure and decide; buffered-only events are retried.
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_exception(exc)
            keep = [(event, None) for event, done in batch if done is None]
            for _ in batch:
                self._pending.popleft()
            self._pending.extendleft(reversed(keep))
            raise
        for _ in batch:
            self._pending.popleft()
        self.written += len(batch)
        for _, done in batch:
            if done is not None and not done.done():
                done.set_result(None)

    def status(self) -> dict[str, Any]:
        """``{running, pending, written, dropped, lastError}``."""
        return {
            "running": self._task is not None and not self._task.done(),
            "pending": len(self._pending),
            "written": self.written,
            "dropped": self.dropped,
            "lastError": self.last_error,
        }


class ServiceAuditSink:
    """An AuditSink for code in another actor: the ``audit`` service's ``record_event``.

    Each call is an actor call that returns after the event is committed by
    the audit plugin (it batches concurrent callers into one transaction).
    Failures are logged, never raised: auditing must not fail the request.
    """

    def __init__(self, services: ServiceDirectory) -> None:
        self._services = services

    async def record(self, event: AuditEvent) -> None:
        try:
            await self._services.get(AUDIT_SERVICE).record_event(event.to_dict())
        except Exception:
            logger.exception("could not record audit event %s", event.action)


def auth_event_recorder(sink: AuditSink) -> Callable[[AuthEvent], Awaitable[None]]:
    """An ``on_event`` callback for :class:`~objectos.security.identity.IdentityService`.

    Each :class:`~objectos.security.identity.AuthEvent` (``auth.signed_in``,
    ``auth.sign_in_failed``, ``auth.locked_out``, ...) becomes an audit
    event with its type as the action, the user as actor (the email when no
    account matched), the client IP, and the rest in ``details``.
    """

    async def record(event: AuthEvent) -> None:
        details: dict[str, Any] = dict(event.details)
        if event.email is not None:
            details.setdefault("email", event.email)
        await sink.record(
            AuditEvent.new(
                event.type,
                actor=event.user_id or event.email,
                object="user" if event.user_id else None,
                record_id=event.user_id,
                context={"ip": event.ip} if event.ip else None,
                details=details,
                at=dt.datetime.fromtimestamp(event.at, dt.UTC),
            )
        )

    return record


__all__ = [
    "AUDIT_SERVICE",
    "AuditSink",
    "SQLAuditSink",
    "ServiceAuditSink",
    "auth_event_recorder",
]
