"""Test doubles of the realtime tests: permissions, gateways, a clock, a log with a hook.

The change log itself is always real (a SQLite file written by a real DataEngine);
these stand in only for what the realtime engines take from outside: the
permission engine, the Socket.IO gateways and the time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from objectos.data import Actor, ChangeLog, ChangePage
from objectos.data.filter import ColumnInfo
from objectos.realtime.subscriptions import GatewayGone

ALICE = Actor.user("alice", ["support"])  # team "support"
BOB = Actor.user("bob", ["sales"])  # team "sales"
MANAGER = Actor.user("maria", ["manager"])
WRITER = Actor.system_actor("writer")

#: The field only managers may read.
SECRET_FIELD = "secret_note"


class TeamVisibility:
    """RecordVisibility of a small help desk.

    A user reads the records of their team (``team`` is one of their roles) and
    the records they own; managers read everything. Only managers read
    :data:`SECRET_FIELD`. Every call is counted per user.
    """

    def __init__(self, columns: Mapping[str, Mapping[str, ColumnInfo]]) -> None:
        self.columns = columns
        self.reads: dict[str | None, int] = {}

    def can_read(self, actor: Actor, object_name: str, record: Mapping[str, Any]) -> bool:
        self.reads[actor.user_id] = self.reads.get(actor.user_id, 0) + 1
        if "manager" in actor.roles:
            return True
        return record.get("team") in actor.roles or record.get("owner") == actor.user_id

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        fields = set(self.columns[object_name])
        if "manager" not in actor.roles:
            fields.discard(SECRET_FIELD)
        return fields


class Gateways:
    """Records every ``deliver(gateway, batch)``; gateways can be gone or flaky on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gone: set[str] = set()
        self.failures: dict[str, int] = {}

    async def deliver(self, gateway: str, batch: Any) -> None:
        if gateway in self.gone:
            raise GatewayGone(gateway)
        if self.failures.get(gateway, 0) > 0:
            self.failures[gateway] -= 1
            raise RuntimeError(f"{gateway} is busy")
        self.calls.append((gateway, batch))

    def messages(self, connection_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(event_name, payload)`` emitted to ``connection_id`` (or anyone), in order."""
        return [
            (name, payload)
            for _, batch in self.calls
            for connection, name, payload in batch.messages()
            if connection_id is None or connection == connection_id
        ]

    def events(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        """Payloads of record events emitted to ``connection_id``."""
        return [p for name, p in self.messages(connection_id) if name == "event"]

    def summary(self, connection_id: str | None = None) -> list[tuple[str, str, int]]:
        """``(eventName, recordId, cursor)`` of each record event, to compare in one line."""
        return [(e["eventName"], e["recordId"], e["cursor"]) for e in self.events(connection_id)]

    def clear(self) -> None:
        self.calls.clear()


class ManualClock:
    """Seconds since the epoch that move only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HookedLog:
    """A real ChangeLog with a one-shot hook on the next *replay* read (one naming objects).

    ``hook`` is awaited just before that read (``before=True``) or just after it,
    before the reader sees the page: whatever it commits and pushes lands in the
    middle of that reader's replay. Reads without ``objects`` (a room's probes, a
    feed's pages) pass through, unless ``only_replays`` is False.
    """

    def __init__(self, log: ChangeLog, *, before: bool = False, only_replays: bool = True) -> None:
        self.log = log
        self.hook: Callable[[], Awaitable[None]] | None = None
        self.before = before
        self.only_replays = only_replays

    async def since(
        self, cursor: int = 0, objects: Iterable[str] | None = None, limit: int = 100
    ) -> ChangePage:
        hook = self.hook if objects is not None or not self.only_replays else None
        if hook is not None:
            self.hook = None
        if hook is not None and self.before:
            await hook()
        page = await self.log.since(cursor, objects, limit)
        if hook is not None and not self.before:
            await hook()
        return page

    async def latest(self) -> int:
        return await self.log.latest()
