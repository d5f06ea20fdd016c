"""The change log (``_change_log``): every committed write, in order, with a server version.

The data engine appends one row per created, updated or deleted record —
cascaded deletes, set_null updates and summary roll-ups included — in the
same transaction as the write itself, so a write that fails leaves no row and
nothing is visible before commit. ``seq`` is the *server version*: allocated
from a counter that is held until commit (:mod:`objectos.data.sequence`), so
it increases in commit order without gaps and a reader that has seen version
``n`` has seen everything up to ``n``.

Sync pulls, realtime catch-up (``since: cursor``) and audit read it with
:meth:`ChangeLog.since`.

For the audit trail every row also carries ``previous`` — the values the
changed fields had before the write (on a delete: the whole record as it
was; ``None`` on a create) — and ``context``, the request the writer acted
in (:attr:`objectos.data.actor.Actor.context`: ``ip``, ``userAgent``,
``requestId``, ``traceId``). Both stay out of :meth:`ChangeEntry.to_dict`:
old values and client addresses are for auditors, not for sync and realtime
subscribers. Databases created before these columns existed get them added
in place by :meth:`ChangeLog.upgrade` (nullable, so old rows read as
``previous=None``, ``context={}``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from objectos.data.schema import WRITE_OPTION, ObjectTables
from objectos.data.sequence import CHANGE_LOG_SEQUENCE, allocate, current
from objectos.metadata.registry import MetadataRegistry

Operation = Literal["create", "update", "delete"]

MAX_PAGE = 10_000

#: pg_advisory_xact_lock key serialising :meth:`ChangeLog.upgrade` across processes.
_PG_UPGRADE_LOCK_KEY = 0x0B7EC7_C1


def _audit_columns() -> list[sa.Column[Any]]:
    """Columns added to ``_change_log`` for the audit trail (all nullable: old rows stay valid)."""
    return [
        sa.Column(
            "previous",
            sa.JSON(),
            nullable=True,
            comment="Values of the changed fields before the write (delete: the whole record).",
        ),
        sa.Column(
            "context",
            sa.JSON(),
            nullable=True,
            comment="The writer's request: ip, userAgent, requestId, traceId.",
        ),
    ]


AUDIT_COLUMNS = tuple(column.name for column in _audit_columns())
"""Names of the change log columns that exist for the audit trail."""


@dataclass(frozen=True)
class Change:
    """A write to be logged (before it has a server version)."""

    object: str
    record_id: str
    operation: Operation
    version: int
    changed_fields: list[str]
    record: dict[str, Any] | None
    actor: str | None
    previous: dict[str, Any] | None = None
    """Old values of ``changed_fields`` (update), the last state (delete), None (create)."""
    context: Mapping[str, str] | None = None
    """The writer's request (``Actor.context``); None when unknown."""


@dataclass(frozen=True)
class ChangeEntry:
    """One row of the change log."""

    seq: int
    object: str
    record_id: str
    operation: Operation
    version: int
    changed_fields: list[str]
    record: dict[str, Any] | None
    actor: str | None
    at: dt.datetime
    previous: dict[str, Any] | None = None
    context: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by sync pulls and realtime catch-up.

        Without ``previous`` and ``context`` (see the module docstring).
        """
        return {
            "seq": self.seq,
            "object": self.object,
            "recordId": self.record_id,
            "operation": self.operation,
            "version": self.version,
            "changedFields": list(self.changed_fields),
            "record": self.record,
            "actor": self.actor,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class ChangePage:
    """A page of changes after a cursor; pass ``cursor`` back to continue."""

    changes: list[ChangeEntry] = field(default_factory=list)
    cursor: int = 0
    has_more: bool = False


class ChangeLog:
    """Reads (and, for the data engine, appends to) the change log table."""

    def __init__(self, engine: AsyncEngine, table: sa.Table, sequence: sa.Table) -> None:
        """``table`` is ``_change_log`` and ``sequence`` the ``_sequence`` counter table.

        The audit columns (:data:`AUDIT_COLUMNS`) are added to ``table`` here
        when it lacks them: this module owns them, so a database created from
        these tables has them from the start.
        """
        self._engine = engine
        for column in _audit_columns():
            if column.name not in table.c:
                table.append_column(column)
        self.table = table
        self.sequence = sequence

    @classmethod
    def open(cls, engine: AsyncEngine) -> ChangeLog:
        """The change log of ``engine``'s database, for readers without object metadata.

        The audit plugin tails the log this way; the tables must already
        exist (the data plugin migrates them).
        """
        tables = ObjectTables(MetadataRegistry.from_objects([]))
        return cls(engine, tables.change_log, tables.sequence)

    async def upgrade(self) -> list[str]:
        """Add missing audit columns to an existing ``_change_log`` in place; return their names.

        Never drops or rewrites anything: old rows keep ``NULL`` there. Does
        nothing (and returns ``[]``) when the table is current or does not
        exist yet (the schema migration creates it complete).
        """
        async with self._engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            return await conn.run_sync(self._upgrade_sync)

    def _upgrade_sync(self, conn: sa.Connection) -> list[str]:
        if conn.dialect.name == "postgresql":
            # Two processes upgrading together: the second waits, then sees the columns.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_UPGRADE_LOCK_KEY)))
        inspector = sa.inspect(conn)
        if not inspector.has_table(self.table.name):
            return []
        live = {column["name"] for column in inspector.get_columns(self.table.name)}
        operations = Operations(MigrationContext.configure(conn))
        added = []
        for column in _audit_columns():
            if column.name not in live:
                # A nullable column without default: a plain ALTER TABLE ADD COLUMN on
                # both SQLite and PostgreSQL, no table rebuild.
                operations.add_column(self.table.name, column)
                added.append(column.name)
        return added

    async def append(
        self, conn: AsyncConnection, changes: Sequence[Change], *, at: dt.datetime
    ) -> list[int]:
        """Log ``changes`` inside the caller's transaction; return their server versions.

        Call it as late as possible in a transaction: on PostgreSQL the
        version counter stays locked from here until commit.
        """
        if not changes:
            return []
        last = await allocate(conn, self.sequence, CHANGE_LOG_SEQUENCE, len(changes))
        first = last - len(changes) + 1
        rows: list[dict[str, Any]] = [
            {
                "seq": first + i,
                "object": c.object,
                "record_id": c.record_id,
                "operation": c.operation,
                "record_version": c.version,
                "changed_fields": list(c.changed_fields),
                "record": c.record,
                "actor": c.actor,
                "at": at,
                "previous": c.previous,
                "context": dict(c.context) if c.context else None,
            }
            for i, c in enumerate(changes)
        ]
        await conn.execute(self.table.insert(), rows)
        return [int(row["seq"]) for row in rows]

    async def latest(self) -> int:
        """The newest committed server version (0 when nothing was ever written)."""
        async with self._engine.connect() as conn:
            return await current(conn, self.sequence, CHANGE_LOG_SEQUENCE)

    async def since(
        self, cursor: int = 0, objects: Iterable[str] | None = None, limit: int = 100
    ) -> ChangePage:
        """Changes with a server version above ``cursor``, oldest first.

        ``objects`` keeps only changes of those objects. The returned cursor
        covers everything read — also changes skipped by the ``objects``
        filter — so a caller polling with it never reads a row twice.
        """
        limit = max(1, min(int(limit), MAX_PAGE))
        t = self.table
        async with self._engine.connect() as conn:
            # Read the counter first: every version up to it is committed, hence
            # visible to the query below, so it is safe to advance the cursor to it.
            committed = await current(conn, self.sequence, CHANGE_LOG_SEQUENCE)
            query = sa.select(t).where(t.c.seq > cursor).order_by(t.c.seq).limit(limit + 1)
            if objects is not None:
                query = query.where(t.c.object.in_(list(objects)))
            rows = (await conn.execute(query)).mappings().all()
        has_more = len(rows) > limit
        entries = [_entry(row) for row in rows[:limit]]
        if has_more:
            new_cursor = entries[-1].seq
        else:
            new_cursor = max([cursor, committed, *(e.seq for e in entries)])
        return ChangePage(entries, new_cursor, has_more)

    async def prune(self, before: dt.datetime) -> int:
        """Delete entries logged before ``before``; return how many went."""
        async with self._engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            result = await conn.execute(self.table.delete().where(self.table.c.at < before))
            return int(result.rowcount or 0)


def _entry(row: Any) -> ChangeEntry:
    return ChangeEntry(
        seq=int(row["seq"]),
        object=row["object"],
        record_id=row["record_id"],
        operation=row["operation"],
        version=int(row["record_version"]),
        changed_fields=list(row["changed_fields"] or []),
        record=row["record"],
        actor=row["actor"],
        at=row["at"],
        previous=row.get("previous"),
        context=dict(row.get("context") or {}),
    )


__all__ = ["AUDIT_COLUMNS", "Change", "ChangeEntry", "ChangeLog", "ChangePage", "Operation"]
