"""Audit events in SQL (``_audit_events``): append, search, per-record trail, prune.

The table lives in the hub database next to the change log it is projected
from, so the projection can store a batch of events **and** its cursor
(``_audit_cursor``) in one transaction: after a crash it resumes exactly
where the last commit left it. Two unique keys make every insert
idempotent on top of that: the event ``id``, and the change log's ``seq``
for write events (:meth:`AuditStore.append` skips rows that exist).

**Search** (:class:`AuditQuery`) filters by object, record, actor, action
(exact, or a prefix such as ``auth.*``), time range, IP and request id, and
pages by keyset on ``(at, id)``, newest first by default: a page costs an
index range scan however deep the client pages, and events arriving while
someone pages never shift what they see. The cursor is opaque
(``nextCursor``); a tampered one is an ``invalid_filter`` error naming
``cursor``.

:meth:`AuditStore.create` makes the tables when they are missing (the audit
plugin calls it on load); nothing here ever drops or rewrites a table.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.audit.events import AuditEvent, FieldChange, iso, utc
from objectos.data.schema import WRITE_OPTION, UTCDateTime, identifier
from objectos.errors import FieldError, InvalidFilter

EVENTS_TABLE = "_audit_events"
CURSOR_TABLE = "_audit_cursor"

#: The projection's cursor row in ``_audit_cursor``.
CHANGE_LOG_CURSOR = "change_log"

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: Rows deleted per transaction when pruning: short write locks, steady progress.
PRUNE_BATCH = 5000

#: pg_advisory_xact_lock key serialising table creation across processes.
_PG_CREATE_LOCK_KEY = 0x0B7EC7_A0

Order = Literal["asc", "desc"]

# HTTP/service query parameter -> AuditQuery attribute (text filters).
_TEXT_PARAMS = {
    "object": "object",
    "recordId": "record_id",
    "actor": "actor",
    "ip": "ip",
    "requestId": "request_id",
}
QUERY_PARAMS = frozenset({*_TEXT_PARAMS, "action", "from", "to", "limit", "cursor", "order"})
"""Every parameter :meth:`AuditQuery.from_params` accepts."""


def audit_tables(metadata: sa.MetaData | None = None) -> tuple[sa.Table, sa.Table]:
    """The ``_audit_events`` and ``_audit_cursor`` tables (in ``metadata`` when given)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    events = sa.Table(
        EVENTS_TABLE,
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=True, comment="Change-log version (writes)."),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("object", sa.String(), nullable=True),
        sa.Column("record_id", sa.String(), nullable=True),
        sa.Column("ip", sa.String(), nullable=True),
        sa.Column("user_agent", sa.String(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("trace_id", sa.String(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        # Unique but nullable: one event per change-log version, any number of others.
        sa.Index(identifier("uq", EVENTS_TABLE, "seq"), "seq", unique=True),
        # One index per filter a search leads with, each ending in the keyset.
        sa.Index(identifier("ix", EVENTS_TABLE, "at_id"), "at", "id"),
        sa.Index(identifier("ix", EVENTS_TABLE, "record"), "object", "record_id", "at", "id"),
        sa.Index(identifier("ix", EVENTS_TABLE, "actor"), "actor", "at", "id"),
        sa.Index(identifier("ix", EVENTS_TABLE, "action"), "action", "at", "id"),
        sa.Index(identifier("ix", EVENTS_TABLE, "request"), "request_id"),
    )
    cursor = sa.Table(
        CURSOR_TABLE,
        metadata,
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    return events, cursor


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    """What to search for; every filter is optional and they combine with AND.

    ``actions`` match exactly, or by prefix when written ``auth.*``;
    ``since`` is inclusive and ``until`` exclusive.
    """

    object: str | None = None
    record_id: str | None = None
    actor: str | None = None
    actions: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    ip: str | None = None
    request_id: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    order: Order = "desc"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AuditQuery:
        """Parse HTTP query parameters (or the ``audit`` service's query dict).

        ``object recordId actor ip requestId`` (text), ``action`` (comma
        separated, ``prefix.*`` allowed), ``from``/``to`` (ISO 8601; a date
        means its midnight UTC), ``limit`` (1-1000), ``cursor``, ``order``
        (``desc``/``asc``). Anything wrong is an ``invalid_filter`` error
        with one field error per parameter.
        """
        errors: list[FieldError] = []
        for name in sorted(set(params) - QUERY_PARAMS, key=str):
            errors.append(FieldError(str(name), "invalid_filter", "unknown audit filter"))
        values: dict[str, Any] = {}
        for param, attribute in _TEXT_PARAMS.items():
            text = _text(params, param, errors)
            if text is not None:
                values[attribute] = text
        action = _text(params, "action", errors)
        if action is not None:
            actions = tuple(a.strip() for a in action.split(",") if a.strip())
            if not actions or any(len(a) > 66 or "*" in a[:-1] for a in actions):
                errors.append(
                    FieldError("action", "invalid_filter", "comma-separated actions or prefix.*")
                )
            values["actions"] = actions
        for param, attribute in (("from", "since"), ("to", "until")):
            text = _text(params, param, errors)
            if text is not None:
                moment = _parse_time(text)
                if moment is None:
                    errors.append(
                        FieldError(param, "invalid_filter", "must be an ISO 8601 date or time")
                    )
                values[attribute] = moment
        limit = params.get("limit")
        if limit is not None:
            number = _integer(limit)
            if number is None or not 1 <= number <= MAX_LIMIT:
                errors.append(FieldError("limit", "invalid_filter", f"must be 1-{MAX_LIMIT}"))
            else:
                values["limit"] = number
        order = params.get("order")
        if order is not None:
            if order not in ("asc", "desc"):
                errors.append(FieldError("order", "invalid_filter", "must be asc or desc"))
            else:
                values["order"] = order
        cursor = _text(params, "cursor", errors)
        if cursor is not None:
            values["cursor"] = cursor
        if errors:
            raise _invalid(errors)
        query = cls(**values)
        if query.since and query.until and query.since >= query.until:
            raise _invalid([FieldError("to", "invalid_filter", "must be later than from")])
        if query.cursor is not None:
            query.keyset()  # a bad cursor fails here, before any streaming starts
        return query

    def to_params(self) -> dict[str, Any]:
        """The parameters :meth:`from_params` reads back into this query."""
        params: dict[str, Any] = {
            param: getattr(self, attribute)
            for param, attribute in _TEXT_PARAMS.items()
            if getattr(self, attribute) is not None
        }
        if self.actions:
            params["action"] = ",".join(self.actions)
        if self.since is not None:
            params["from"] = iso(self.since)
        if self.until is not None:
            params["to"] = iso(self.until)
        params["limit"] = self.limit
        params["order"] = self.order
        if self.cursor is not None:
            params["cursor"] = self.cursor
        return params

    def keyset(self) -> tuple[dt.datetime, str] | None:
        """The ``(at, id)`` the cursor points after; InvalidFilter if it is not ours."""
        if self.cursor is None:
            return None
        try:
            padded = self.cursor + "=" * (-len(self.cursor) % 4)
            at, event_id, order = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            moment = utc(dt.datetime.fromisoformat(at.replace("Z", "+00:00")))
        except (ValueError, TypeError, UnicodeError, binascii.Error):
            raise _invalid(
                [FieldError("cursor", "invalid_filter", "not a cursor of this API")]
            ) from None
        if order != self.order or not isinstance(event_id, str):
            raise _invalid(
                [FieldError("cursor", "invalid_filter", "the cursor belongs to another order")]
            )
        return moment, event_id


def encode_cursor(event: AuditEvent, order: Order) -> str:
    """The opaque cursor pointing after ``event`` in ``order``."""
    raw = json.dumps([iso(event.at), event.id, order], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def _invalid(errors: list[FieldError]) -> InvalidFilter:
    first = errors[0]
    return InvalidFilter(
        "invalid audit query: " + "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
        details={"field": first.field, "reason": first.message},
        field_errors=errors,
    )


def _text(params: Mapping[str, Any], name: str, errors: list[FieldError]) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 512 or "\x00" in value:
        errors.append(FieldError(name, "invalid_filter", "must be text of 1-512 characters"))
        return None
    return value


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _parse_time(text: str) -> dt.datetime | None:
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        return utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


@dataclass(frozen=True)
class AuditPage:
    """One page of events and what the envelope's ``pagination`` needs."""

    events: list[AuditEvent] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    has_more: bool = False
    next_cursor: str | None = None
    total: int | None = None

    def pagination(self) -> dict[str, Any]:
        """``{total, limit, offset, hasMore, nextCursor}`` of PROTOCOL.md (offset is always 0:
        audit pages by cursor only)."""
        return {
            "total": self.total,
            "limit": self.limit,
            "offset": 0,
            "hasMore": self.has_more,
            "nextCursor": self.next_cursor,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": [event.to_dict() for event in self.events],
            "pagination": self.pagination(),
        }


# --- the store -------------------------------------------------------------------------------


class AuditStore:
    """Reads and writes audit events in one database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        """``engine``: the hub database (:func:`objectos.data.schema.create_engine`)."""
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self.metadata = sa.MetaData()
        self.events, self.cursors = audit_tables(self.metadata)

    @property
    def engine(self) -> AsyncEngine:
        """The database this store reads and writes."""
        return self._engine

    async def create(self) -> bool:
        """Create the audit tables and indexes that are missing; True if any were.

        Safe to call from several processes at once (SQLite's write lock, a
        PostgreSQL advisory lock); existing tables are left as they are.
        """
        async with self._write_engine.begin() as conn:
            return await conn.run_sync(self._create_sync)

    def _create_sync(self, conn: sa.Connection) -> bool:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_CREATE_LOCK_KEY)))
        inspector = sa.inspect(conn)
        missing = [t for t in (self.events, self.cursors) if not inspector.has_table(t.name)]
        self.metadata.create_all(conn, tables=missing)
        return bool(missing)

    async def exists(self) -> bool:
        """Whether the audit tables exist (the plugin has run at least once)."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(lambda sync: sa.inspect(sync).has_table(self.events.name))

    # -- writing ----------------------------------------------------------------------------

    async def append(self, events: Sequence[AuditEvent]) -> int:
        """Insert ``events`` in one transaction, skipping ones already stored; return how
        many were new."""
        if not events:
            return 0
        async with self._write_engine.begin() as conn:
            return await self._insert(conn, events)

    async def project(self, events: Sequence[AuditEvent], cursor: int) -> int:
        """Store a projected batch and advance the change-log cursor, atomically.

        The cursor never moves back (two projectors racing leave the larger
        one). Returns how many events were new.
        """
        async with self._write_engine.begin() as conn:
            added = await self._insert(conn, events) if events else 0
            await self._save_cursor(conn, CHANGE_LOG_CURSOR, cursor)
            return added

    async def _insert(self, conn: Any, events: Sequence[AuditEvent]) -> int:
        insert: Any = (
            postgresql.insert(self.events)
            if conn.dialect.name == "postgresql"
            else sqlite.insert(self.events)
        )
        # No conflict target: a duplicate id *or* seq is skipped, whichever it hits.
        # RETURNING counts what was inserted (executemany has no reliable rowcount).
        stmt = insert.on_conflict_do_nothing().returning(self.events.c.id)
        result = await conn.execute(stmt, [_row(event) for event in events])
        return len(result.all())

    async def _save_cursor(self, conn: Any, name: str, seq: int) -> None:
        t = self.cursors
        insert: Any = (
            postgresql.insert(t) if conn.dialect.name == "postgresql" else sqlite.insert(t)
        )
        now = dt.datetime.now(dt.UTC)
        stmt = insert.values(name=name, seq=seq, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={
                "seq": sa.case((stmt.excluded.seq > t.c.seq, stmt.excluded.seq), else_=t.c.seq),
                "updated_at": now,
            },
        )
        await conn.execute(stmt)

    async def cursor(self, name: str = CHANGE_LOG_CURSOR) -> int:
        """The last change-log version projected (0 before the first batch)."""
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(sa.select(self.cursors.c.seq).where(self.cursors.c.name == name))
            ).scalar()
        return int(value or 0)

    async def prune(self, before: dt.datetime, *, batch: int = PRUNE_BATCH) -> int:
        """Delete events older than ``before``, ``batch`` rows per transaction; return how many.

        Small transactions keep the write lock short, so writers (and the
        projection) are never stalled behind a large prune.
        """
        t = self.events
        removed = 0
        while True:
            async with self._write_engine.begin() as conn:
                ids = sa.select(t.c.id).where(t.c.at < utc(before)).limit(batch)
                result = await conn.execute(t.delete().where(t.c.id.in_(ids.scalar_subquery())))
                count = int(result.rowcount or 0)
            removed += count
            if count < batch:
                return removed

    # -- reading ----------------------------------------------------------------------------

    def _where(self, query: AuditQuery) -> list[sa.ColumnElement[bool]]:
        t = self.events
        conditions: list[sa.ColumnElement[bool]] = []
        for attribute in _TEXT_PARAMS.values():
            value = getattr(query, attribute)
            if value is not None:
                conditions.append(t.c[attribute] == value)
        if query.actions:
            matches = []
            for action in query.actions:
                if action.endswith("*"):
                    matches.append(t.c.action.startswith(action[:-1], autoescape=True))
                else:
                    matches.append(t.c.action == action)
            conditions.append(sa.or_(*matches))
        if query.since is not None:
            conditions.append(t.c.at >= query.since)
        if query.until is not None:
            conditions.append(t.c.at < query.until)
        return conditions

    def _select(self, query: AuditQuery, limit: int) -> sa.Select[Any]:
        t = self.events
        stmt = sa.select(t).where(*self._where(query))
        keyset = query.keyset()
        if keyset is not None:
            at, event_id = keyset
            # The leading bound on ``at`` alone is what lets the index seek to the
            # cursor; the OR form only (at < x OR (at = x AND id < y)) made SQLite
            # scan from the first row (deep pages 7x slower, see benchmarks/audit).
            if query.order == "desc":
                stmt = stmt.where(t.c.at <= at, sa.or_(t.c.at < at, t.c.id < event_id))
            else:
                stmt = stmt.where(t.c.at >= at, sa.or_(t.c.at > at, t.c.id > event_id))
        if query.order == "desc":
            stmt = stmt.order_by(t.c.at.desc(), t.c.id.desc())
        else:
            stmt = stmt.order_by(t.c.at.asc(), t.c.id.asc())
        return stmt.limit(limit)

    async def search(self, query: AuditQuery, *, count: bool = False) -> AuditPage:
        """One page of events matching ``query`` (``count``: also the total, one more query)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(self._select(query, query.limit + 1))).mappings().all()
            total = None
            if count:
                stmt = sa.select(sa.func.count()).select_from(self.events)
                total = int((await conn.execute(stmt.where(*self._where(query)))).scalar_one())
        events = [_event(row) for row in rows[: query.limit]]
        has_more = len(rows) > query.limit
        next_cursor = encode_cursor(events[-1], query.order) if has_more and events else None
        return AuditPage(events, query.limit, has_more, next_cursor, total)

    async def trail(
        self, object_name: str, record_id: str, query: AuditQuery | None = None
    ) -> AuditPage:
        """The events of one record (``query`` may narrow and page them further)."""
        query = replace(query or AuditQuery(), object=object_name, record_id=record_id)
        return await self.search(query)

    async def iterate(self, query: AuditQuery, *, chunk: int = 500) -> AsyncIterator[AuditEvent]:
        """Every event matching ``query`` (``limit`` ignored), ``chunk`` rows per round trip.

        Constant memory, and no read transaction held open between chunks
        (a long export must not pin SQLite's WAL or a PostgreSQL snapshot).
        """
        chunk = max(1, min(chunk, MAX_LIMIT * 10))
        current = query
        while True:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(self._select(current, chunk))).mappings().all()
            for row in rows:
                yield _event(row)
            if len(rows) < chunk:
                return
            current = replace(current, cursor=encode_cursor(_event(rows[-1]), current.order))


def _row(event: AuditEvent) -> dict[str, Any]:
    # Storable whatever a caller put in: an event the database refuses would
    # otherwise be retried forever and hold up every event behind it.
    return {
        "id": event.id,
        "seq": event.seq,
        "at": utc(event.at),
        "action": event.action,
        "actor": _storable(event.actor),
        "object": _storable(event.object),
        "record_id": _storable(event.record_id),
        "ip": _storable(event.ip),
        "user_agent": _storable(event.user_agent),
        "request_id": _storable(event.request_id),
        "trace_id": _storable(event.trace_id),
        "changes": _storable([change.to_dict() for change in event.changes]) or None,
        "details": _storable(dict(event.details)) or None,
    }


def _storable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON both databases store: no NUL, no lone surrogate, no NaN, no
    non-JSON type (those become their ``str``); nesting cut at 32 levels."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= 32:
        return _storable(str(value), depth)
    if isinstance(value, Mapping):
        return {_storable(str(k), depth): _storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v, depth + 1) for v in value]
    return _storable(str(value), depth)


def _event(row: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=row["at"],
        action=row["action"],
        actor=row["actor"],
        object=row["object"],
        record_id=row["record_id"],
        changes=tuple(
            FieldChange(c["field"], c.get("old"), c.get("new")) for c in row["changes"] or ()
        ),
        ip=row["ip"],
        user_agent=row["user_agent"],
        request_id=row["request_id"],
        trace_id=row["trace_id"],
        seq=int(row["seq"]) if row["seq"] is not None else None,
        details=dict(row["details"] or {}),
    )


__all__ = [
    "CHANGE_LOG_CURSOR",
    "CURSOR_TABLE",
    "DEFAULT_LIMIT",
    "EVENTS_TABLE",
    "MAX_LIMIT",
    "QUERY_PARAMS",
    "AuditPage",
    "AuditQuery",
    "AuditStore",
    "audit_tables",
    "encode_cursor",
]
