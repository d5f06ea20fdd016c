"""The retention policy: audit events older than N days are pruned on a cron schedule.

::

    policy = RetentionPolicy(store, days=365, schedule="17 3 * * *")   # 03:17 UTC daily
    await policy.start()              # a task owned by the policy
    ...
    await policy.stop()

``days=0`` keeps events forever (the schedule still runs and prunes
nothing). Schedules are standard five-field cron expressions evaluated in
UTC (croniter). A failed prune is logged and the next scheduled run tries
again; the loop never dies of it. Pruning deletes in small batches
(:meth:`AuditStore.prune`), so it never holds the write lock for long.

The change log is not pruned here: sync and realtime read it too, and its
retention is theirs to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from croniter import croniter

from objectos.audit.store import AuditStore
from objectos.errors import ConfigError, FieldError

logger = logging.getLogger("objectos.audit")

DEFAULT_SCHEDULE = "17 3 * * *"
DEFAULT_RETENTION_DAYS = 365


def check_schedule(expression: str, field: str = "pruneSchedule") -> str:
    """``expression`` if it is a five-field cron expression; ConfigError naming ``field``."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        valid = False
    else:
        valid = bool(croniter.is_valid(expression))
    if not valid:
        reason = "must be a five-field cron expression such as '17 3 * * *'"
        raise ConfigError(
            f"{field} {expression!r} {reason}",
            details={"field": field, "reason": reason},
            field_errors=[FieldError(field, "invalid_config", reason)],
        )
    return expression


class RetentionPolicy:
    """Prunes events older than ``days`` at every time ``schedule`` names."""

    def __init__(
        self,
        store: AuditStore,
        *,
        days: int = DEFAULT_RETENTION_DAYS,
        schedule: str = DEFAULT_SCHEDULE,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """``clock`` gives UTC now; ConfigError for a bad schedule or negative ``days``."""
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            reason = "must be a whole number of days, 0 to keep events forever"
            raise ConfigError(
                f"retentionDays {days!r} {reason}",
                details={"field": "retentionDays", "reason": reason},
                field_errors=[FieldError("retentionDays", "invalid_config", reason)],
            )
        self.store = store
        self.days = days
        self.schedule = check_schedule(schedule)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.last_run: dt.datetime | None = None
        self.last_removed: int | None = None
        self.last_error: str | None = None

    def cutoff(self, now: dt.datetime) -> dt.datetime | None:
        """Events before this moment are pruned at ``now`` (None: keep everything)."""
        return now - dt.timedelta(days=self.days) if self.days else None

    def next_run(self, after: dt.datetime) -> dt.datetime:
        """The first scheduled time strictly after ``after`` (UTC)."""
        result: dt.datetime = croniter(self.schedule, after.astimezone(dt.UTC)).get_next(
            dt.datetime
        )
        return result

    async def prune_now(self) -> int:
        """Apply the policy once, now; return how many events were removed."""
        now = self._clock()
        cutoff = self.cutoff(now)
        removed = 0 if cutoff is None else await self.store.prune(cutoff)
        self.last_run, self.last_removed, self.last_error = now, removed, None
        if removed:
            logger.info("audit retention: pruned %d events older than %s", removed, cutoff)
        return removed

    async def start(self) -> None:
        """Start the schedule in a task this policy owns (once)."""
        if self._started:
            raise RuntimeError("this retention policy was already started")
        self._started = True
        self._task = asyncio.create_task(self._run(), name="audit-retention")

    async def stop(self) -> None:
        """Cancel the schedule and wait for it (a prune in flight rolls back its batch)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        scheduled: dt.datetime | None = None
        while True:
            now = self._clock()
            # From the last scheduled time too: a sleep that wakes a little early
            # must not run the same slot twice.
            scheduled = self.next_run(max(now, scheduled) if scheduled else now)
            await asyncio.sleep(max((scheduled - now).total_seconds(), 0.0))
            try:
                await self.prune_now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("audit retention run failed; next run as scheduled", exc_info=True)

    def status(self) -> dict[str, Any]:
        """``{days, schedule, nextRun, lastRun, lastRemoved, lastError}``."""
        return {
            "days": self.days,
            "schedule": self.schedule,
            "nextRun": self.next_run(self._clock()).isoformat(),
            "lastRun": self.last_run.isoformat() if self.last_run else None,
            "lastRemoved": self.last_removed,
            "lastError": self.last_error,
        }


__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_SCHEDULE",
    "RetentionPolicy",
    "check_schedule",
]
