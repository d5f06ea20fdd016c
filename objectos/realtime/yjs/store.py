"""Where a document's updates live between activations: an append log plus a snapshot.

Every update a room accepts is appended (one row, a monotonic ``seq``) before
anybody is told about it. Now and then the room writes a *snapshot* -- the whole
document as one update -- and the appended updates it covers are deleted. Loading
is "snapshot, then every update still in the log"; Yjs updates are idempotent and
commutative, so an update that is both in the snapshot and still in the log (a
store that crashed between the two steps) costs time, never content.

One live room per document writes to a store (the Room actor's name guarantees it);
two writers would each compact away the other's log entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.errors import Conflict


class StoredDocument(NamedTuple):
    """What :meth:`UpdateStore.load` returns.

    ``last_seq`` is the highest sequence number the snapshot or the log covers
    (0 for a new document): the room passes it back to :meth:`UpdateStore.compact`
    as ``up_to_seq`` when nothing was appended since the load.
    """

    snapshot: bytes | None
    updates: list[bytes]
    last_seq: int


class UpdateStore(Protocol):
    """Durable storage of one document's updates (see the module docstring)."""

    async def load(self) -> StoredDocument:
        """Snapshot (or None) and the updates appended after it, in append order."""
        ...

    async def append(self, update: bytes) -> int:
        """Durably append one update; return its sequence number (strictly increasing)."""
        ...

    async def append_many(self, updates: Sequence[bytes]) -> list[int]:
        """Durably append several updates in one write (all or none); their seqs, in order.

        The room's group commit: one fsync for every update that arrived while the
        previous write was in flight.
        """
        ...

    async def compact(self, snapshot: bytes, up_to_seq: int) -> None:
        """Atomically store ``snapshot`` and delete the updates with ``seq <= up_to_seq``.

        After a failure either both happened or neither did.
        """
        ...


class MemoryUpdateStore:
    """An :class:`UpdateStore` in a Python object: tests and single-process use without a database.

    It survives a room's passivation (keep the object), not the process.
    """

    def __init__(self) -> None:
        self.snapshot: bytes | None = None
        self.snapshot_seq = 0
        self.updates: list[tuple[int, bytes]] = []
        self._next_seq = 1

    async def load(self) -> StoredDocument:
        last = max([self.snapshot_seq, *(seq for seq, _ in self.updates)])
        return StoredDocument(self.snapshot, [u for _, u in self.updates], last)

    async def append(self, update: bytes) -> int:
        return (await self.append_many([update]))[0]

    async def append_many(self, updates: Sequence[bytes]) -> list[int]:
        seqs = list(range(self._next_seq, self._next_seq + len(updates)))
        self._next_seq += len(updates)
        self.updates.extend(zip(seqs, (bytes(u) for u in updates), strict=True))
        return seqs

    async def compact(self, snapshot: bytes, up_to_seq: int) -> None:
        # No await between the two assignments: nothing can observe a half-done compaction.
        if up_to_seq < self.snapshot_seq:
            raise Conflict(
                f"snapshot up to seq {up_to_seq} is older than the stored one ({self.snapshot_seq})"
            )
        self.snapshot, self.snapshot_seq = bytes(snapshot), up_to_seq
        self.updates = [(seq, u) for seq, u in self.updates if seq > up_to_seq]


YJS_METADATA = sa.MetaData()
"""The tables of the collaborative-document store (created by :func:`create_yjs_tables`)."""

# sqlite_autoincrement: without AUTOINCREMENT SQLite may hand out the rowid of a
# deleted row again; a reused seq could then fall under a snapshot's up_to_seq and
# be compacted away unseen. BigInteger becomes INTEGER on SQLite because only an
# INTEGER PRIMARY KEY autoincrements there.
yjs_updates = sa.Table(
    "_yjs_updates",
    YJS_METADATA,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("doc", sa.String(512), nullable=False),
    sa.Column("update", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix__yjs_updates_doc_seq", "doc", "seq"),
    sqlite_autoincrement=True,
)

yjs_snapshots = sa.Table(
    "_yjs_snapshots",
    YJS_METADATA,
    sa.Column("doc", sa.String(512), primary_key=True),
    sa.Column("snapshot", sa.LargeBinary(), nullable=False),
    sa.Column("up_to_seq", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


async def create_yjs_tables(engine: AsyncEngine) -> None:
    """Create the ``_yjs_*`` tables if they are missing (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(YJS_METADATA.create_all, checkfirst=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SQLUpdateStore:
    """An :class:`UpdateStore` for one document in ``_yjs_updates`` / ``_yjs_snapshots``.

    SQLAlchemy async Core; the same statements run on SQLite (aiosqlite) and
    PostgreSQL (asyncpg). Create the tables first with :func:`create_yjs_tables`.
    """

    def __init__(
        self, engine: AsyncEngine, doc: str, *, now: Callable[[], datetime] = _utcnow
    ) -> None:
        self.engine = engine
        self.doc = doc
        self._now = now

    async def load(self) -> StoredDocument:
        # Log first, snapshot second: under READ COMMITTED a compaction can commit
        # between the two statements. In this order we then see the old log plus the
        # new snapshot (a superset); in the other order, the old snapshot plus the
        # shortened log -- and the updates in between would be lost.
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(yjs_updates.c.seq, yjs_updates.c.update)
                    .where(yjs_updates.c.doc == self.doc)
                    .order_by(yjs_updates.c.seq)
                )
            ).all()
            snap = (
                await conn.execute(
                    sa.select(yjs_snapshots.c.snapshot, yjs_snapshots.c.up_to_seq).where(
                        yjs_snapshots.c.doc == self.doc
                    )
                )
            ).first()
        snapshot, snapshot_seq = (bytes(snap[0]), int(snap[1])) if snap else (None, 0)
        last = max([snapshot_seq, *(int(r[0]) for r in rows)])
        return StoredDocument(snapshot, [bytes(r[1]) for r in rows], last)

    async def append(self, update: bytes) -> int:
        return (await self.append_many([update]))[0]

    async def append_many(self, updates: Sequence[bytes]) -> list[int]:
        if not updates:
            return []
        now = self._now()
        async with self.engine.begin() as conn:
            # One statement, one transaction: SQLAlchemy's "insertmanyvalues" batches
            # the rows and keeps RETURNING in parameter order on SQLite and asyncpg.
            result = await conn.execute(
                sa.insert(yjs_updates).returning(yjs_updates.c.seq, sort_by_parameter_order=True),
                [{"doc": self.doc, "update": bytes(u), "created_at": now} for u in updates],
            )
            return [int(seq) for seq in result.scalars()]

    async def compact(self, snapshot: bytes, up_to_seq: int) -> None:
        async with self.engine.begin() as conn:
            # Update-then-insert is portable (no dialect-specific upsert); the
            # ``up_to_seq <=`` guard keeps a stale writer from rolling a snapshot back.
            updated = await conn.execute(
                sa.update(yjs_snapshots)
                .where(yjs_snapshots.c.doc == self.doc, yjs_snapshots.c.up_to_seq <= up_to_seq)
                .values(snapshot=bytes(snapshot), up_to_seq=up_to_seq, created_at=self._now())
            )
            if updated.rowcount == 0:
                existing = (
                    await conn.execute(
                        sa.select(yjs_snapshots.c.up_to_seq).where(yjs_snapshots.c.doc == self.doc)
                    )
                ).scalar_one_or_none()
                if existing is not None:
                    raise Conflict(
                        f"snapshot of {self.doc!r} up to seq {up_to_seq} is older than the "
                        f"stored one ({existing})",
                        details={"doc": self.doc, "stored_up_to_seq": int(existing)},
                    )
                await conn.execute(
                    sa.insert(yjs_snapshots).values(
                        doc=self.doc,
                        snapshot=bytes(snapshot),
                        up_to_seq=up_to_seq,
                        created_at=self._now(),
                    )
                )
            await conn.execute(
                sa.delete(yjs_updates).where(
                    yjs_updates.c.doc == self.doc, yjs_updates.c.seq <= up_to_seq
                )
            )


__all__ = [
    "YJS_METADATA",
    "MemoryUpdateStore",
    "SQLUpdateStore",
    "StoredDocument",
    "UpdateStore",
    "create_yjs_tables",
    "yjs_snapshots",
    "yjs_updates",
]
