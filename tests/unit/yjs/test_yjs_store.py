"""The update stores: one contract, run against memory, SQLite and (if configured) PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from objectos.errors import Conflict
from objectos.realtime.yjs import (
    MemoryUpdateStore,
    SQLUpdateStore,
    StoredDocument,
    UpdateStore,
    create_yjs_tables,
)
from objectos.realtime.yjs.store import yjs_snapshots, yjs_updates

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")

StoreFactory = Callable[[str], UpdateStore]


async def _sql_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    await create_yjs_tables(engine)
    async with engine.begin() as conn:  # a shared PostgreSQL may hold earlier runs
        await conn.execute(sa.delete(yjs_updates).where(yjs_updates.c.doc.like("test-%")))
        await conn.execute(sa.delete(yjs_snapshots).where(yjs_snapshots.c.doc.like("test-%")))
    return engine


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="OBJECTOS_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]
)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """``stores(doc)`` -> a store of that document; the same doc name means the same data."""
    if request.param == "memory":
        memory: dict[str, MemoryUpdateStore] = {}
        yield lambda doc: memory.setdefault(doc, MemoryUpdateStore())
        return
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'yjs.db'}" if request.param == "sqlite" else POSTGRES_URL
    )
    assert url is not None
    engine = await _sql_engine(url)
    try:
        yield lambda doc: SQLUpdateStore(engine, doc)
    finally:
        await engine.dispose()


async def test_a_new_document_is_empty(stores: StoreFactory) -> None:
    assert await stores("test-new").load() == StoredDocument(None, [], 0)


async def test_appends_come_back_in_order_with_increasing_seqs(stores: StoreFactory) -> None:
    store = stores("test-log")
    seqs = [await store.append(bytes([i, 0])) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    loaded = await stores("test-log").load()
    assert loaded.snapshot is None
    assert loaded.updates == [bytes([i, 0]) for i in range(5)]
    assert loaded.last_seq == seqs[-1]


async def test_append_many_is_one_ordered_write(stores: StoreFactory) -> None:
    store = stores("test-many")
    first = await store.append(b"first")
    seqs = await store.append_many([b"a", b"b", b"c"])
    assert seqs == sorted(seqs) and seqs[0] > first and len(set(seqs)) == 3
    assert await store.append_many([]) == []
    loaded = await store.load()
    assert loaded.updates == [b"first", b"a", b"b", b"c"]
    assert loaded.last_seq == seqs[-1]


async def test_documents_do_not_see_each_other(stores: StoreFactory) -> None:
    await stores("test-a").append(b"a")
    await stores("test-b").append(b"b")
    assert (await stores("test-a").load()).updates == [b"a"]


async def test_compaction_replaces_the_covered_log_with_the_snapshot(stores: StoreFactory) -> None:
    store = stores("test-compact")
    first = [await store.append(bytes([i])) for i in range(3)]
    await store.compact(b"snapshot-1", up_to_seq=first[-1])
    later = await store.append(b"later")

    loaded = await store.load()

    assert loaded.snapshot == b"snapshot-1"
    assert loaded.updates == [b"later"]
    assert loaded.last_seq == later


async def test_a_stale_compaction_cannot_roll_the_snapshot_back(stores: StoreFactory) -> None:
    store = stores("test-stale")
    s1 = await store.append(b"1")
    s2 = await store.append(b"2")
    await store.compact(b"up-to-2", up_to_seq=s2)
    with pytest.raises(Conflict):
        await store.compact(b"up-to-1", up_to_seq=s1)
    assert (await store.load()).snapshot == b"up-to-2"


async def test_seq_is_never_reused_after_the_newest_rows_are_compacted(
    stores: StoreFactory,
) -> None:
    # Without AUTOINCREMENT, SQLite hands out max(rowid)+1 -- the seq of a row that
    # compaction just deleted -- and a later compaction could cover it unseen.
    store = stores("test-reuse")
    seq = await store.append(b"x")
    await store.compact(b"snap", up_to_seq=seq)
    assert await store.append(b"y") > seq


async def test_sqlite_compaction_is_one_transaction(tmp_path: Path) -> None:
    """A failure between writing the snapshot and deleting the log rolls both back."""
    engine = await _sql_engine(f"sqlite+aiosqlite:///{tmp_path / 'yjs.db'}")
    try:
        store = SQLUpdateStore(engine, "test-atomic")
        seq = await store.append(b"u1")
        await store.append(b"u2")
        async with engine.begin() as conn:
            # A real failure inside the real database, right at the second statement.
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_delete BEFORE DELETE ON _yjs_updates "
                    "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            )
        with pytest.raises(sa.exc.DBAPIError, match="disk on fire"):
            await store.compact(b"snapshot", up_to_seq=seq)

        loaded = await store.load()
        assert loaded.snapshot is None  # the snapshot row was rolled back too
        assert loaded.updates == [b"u1", b"u2"]
    finally:
        await engine.dispose()


async def test_load_reads_log_before_snapshot_so_a_concurrent_compaction_loses_nothing(
    tmp_path: Path,
) -> None:
    """Compaction committing between load's two reads must yield a superset, not a gap."""
    engine = await _sql_engine(f"sqlite+aiosqlite:///{tmp_path / 'yjs.db'}")
    try:
        store = SQLUpdateStore(engine, "test-race")
        seq = await store.append(b"u1")
        compacted: list[Any] = []

        @sa.event.listens_for(engine.sync_engine, "after_cursor_execute")
        def compact_between_reads(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
            if "FROM _yjs_updates" in statement and not compacted:
                compacted.append(True)
                # Emulate another writer's committed compaction at this instant.
                with engine.sync_engine.connect() as other:
                    other.execute(
                        sa.insert(yjs_snapshots).values(
                            doc="test-race",
                            snapshot=b"snap",
                            up_to_seq=seq,
                            created_at=sa.func.current_timestamp(),
                        )
                    )
                    other.execute(sa.delete(yjs_updates).where(yjs_updates.c.seq <= seq))
                    other.commit()

        loaded = await store.load()
        assert compacted
        # Both the old log entry and the snapshot that covers it: nothing lost.
        assert loaded.updates == [b"u1"]
        assert loaded.snapshot == b"snap"
    finally:
        await engine.dispose()
