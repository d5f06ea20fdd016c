"""The change log, projected into audit events: nothing added to the write path.

Every write already appends to ``_change_log`` in its own transaction
(:mod:`objectos.data.changelog`), with the field values before the write
(``previous``) and the writer's request (``context``). The
:class:`AuditProjection` tails that log from a cursor and stores one
:class:`~objectos.audit.events.AuditEvent` per entry::

    projection = AuditProjection(ChangeLog.open(database), AuditStore(database))
    await projection.start()          # a task owned by the projection
    ...
    await projection.stop()

Each batch and the cursor after it are committed together
(:meth:`AuditStore.project`), so a process killed at any point resumes
exactly after the last committed batch: no event is lost, none is stored
twice (and the ``seq`` unique key would refuse a twin anyway). A write is
never slowed down by auditing; an audit event appears within about one poll
interval of the write's commit.

Change-log versions are gapless, so a jump in ``seq`` means entries were
pruned from the change log before the projection read them; that is
recorded as one ``audit.gap`` event naming the missing range instead of
passing silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from objectos.audit.events import (
    ACTION_OF_OPERATION,
    AUDIT_GAP,
    AuditEvent,
    FieldChange,
    change_event_id,
)
from objectos.audit.store import AuditStore
from objectos.data.changelog import ChangeEntry, ChangeLog
from objectos.data.schema import new_id

logger = logging.getLogger("objectos.audit")

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL_S = 0.5
#: Longest wait between retries while the database keeps failing.
MAX_BACKOFF_S = 30.0


def event_from_change(entry: ChangeEntry) -> AuditEvent:
    """The audit event of one change-log entry, with field-level old and new values.

    A create lists every field it set (``old`` None), an update each changed
    field with both values, a delete every field the record had (``new``
    None). Password fields never reach the change log, so they appear at
    most as a changed field name with no values.
    """
    record = entry.record or {}
    previous = entry.previous or {}
    changes: list[FieldChange]
    if entry.operation == "delete":
        # Older change-log rows have no pre-image; the logged record is the last state.
        before = previous or record
        changes = [FieldChange(name, value, None) for name, value in before.items()]
    else:
        changes = [
            FieldChange(name, previous.get(name), record.get(name)) for name in entry.changed_fields
        ]
    context = entry.context or {}
    return AuditEvent(
        id=change_event_id(entry.seq),
        at=entry.at,
        action=ACTION_OF_OPERATION[entry.operation],
        actor=entry.actor,
        object=entry.object,
        record_id=entry.record_id,
        changes=tuple(changes),
        ip=context.get("ip"),
        user_agent=context.get("userAgent"),
        request_id=context.get("requestId"),
        trace_id=context.get("traceId"),
        seq=entry.seq,
        details={"version": entry.version},
    )


def gap_event(first_missing: int, last_missing: int, at: dt.datetime) -> AuditEvent:
    """The ``audit.gap`` event for change-log versions that are gone."""
    return AuditEvent(
        id=new_id(),
        at=at,
        action=AUDIT_GAP,
        actor="system:audit",
        details={
            "fromSeq": first_missing,
            "toSeq": last_missing,
            "reason": "change-log entries were pruned before the audit projection read them",
        },
    )


@dataclass(frozen=True)
class ProjectionStep:
    """What one :meth:`AuditProjection.step` did."""

    projected: int
    cursor: int
    has_more: bool


class AuditProjection:
    """Tails the change log into the audit store (see the module docstring).

    ``batch_size`` entries are read and committed per transaction;
    ``poll_interval_s`` is the wait when the log has nothing new. One
    projection runs one task: :meth:`start` refuses a second start,
    :meth:`stop` cancels and awaits it. Errors never end the loop: they are
    logged, kept in :meth:`status` and retried with backoff.
    """

    def __init__(
        self,
        log: ChangeLog,
        store: AuditStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """``clock`` gives UTC now (for gap events)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.log = log
        self.store = store
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._cursor: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.projected = 0
        self.last_error: str | None = None
        self.last_step_at: float | None = None

    # -- one batch --------------------------------------------------------------------------

    async def step(self) -> ProjectionStep:
        """Project one batch after the stored cursor; commit it with the new cursor."""
        if self._cursor is None:
            self._cursor = await self.store.cursor()
        cursor = self._cursor
        page = await self.log.since(cursor, limit=self.batch_size)
        events = []
        expected = cursor + 1
        for entry in page.changes:
            if entry.seq > expected:
                events.append(gap_event(expected, entry.seq - 1, self._clock()))
            events.append(event_from_change(entry))
            expected = entry.seq + 1
        if not page.changes and page.cursor > cursor:
            # Committed versions that no longer have rows: pruned from the log.
            events.append(gap_event(expected, page.cursor, self._clock()))
        if events or page.cursor != cursor:
            await self.store.project(events, page.cursor)
        self._cursor = page.cursor
        projected = len(page.changes)
        self.projected += projected
        self.last_step_at = time.time()
        return ProjectionStep(projected, page.cursor, page.has_more)

    async def catch_up(self) -> int:
        """Project until the log has nothing new; return how many entries were projected."""
        total = 0
        while True:
            step = await self.step()
            total += step.projected
            if not step.has_more:
                return total

    # -- the loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start tailing in a task this projection owns (once)."""
        if self._started:
            raise RuntimeError("this audit projection was already started")
        self._started = True
        self._task = asyncio.create_task(self._run(), name="audit-projection")

    async def stop(self) -> None:
        """Cancel the tail loop and wait for it; a batch in flight is rolled back, not half
        stored, and is projected again by the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @property
    def running(self) -> bool:
        """Whether the tail loop is alive."""
        return self._task is not None and not self._task.done()

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

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                step = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                # Read the cursor again: the failed batch may or may not have committed.
                self._cursor = None
                delay = min(self.poll_interval_s * 2**failures, MAX_BACKOFF_S)
                logger.warning("audit projection failed (retry in %.1fs)", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.last_error = None
            if not step.has_more:
                await asyncio.sleep(self.poll_interval_s)

    def status(self) -> dict[str, Any]:
        """``{running, cursor, projected, lastError, lastStepAt}`` for health checks."""
        return {
            "running": self.running,
            "cursor": self._cursor,
            "projected": self.projected,
            "lastError": self.last_error,
            "lastStepAt": self.last_step_at,
        }


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_POLL_INTERVAL_S",
    "AuditProjection",
    "ProjectionStep",
    "event_from_change",
    "gap_event",
]
