"""Reads in one hop: a read's statements run together, off the event loop, on a sync connection.

With aiosqlite every statement of a read is several round trips between the event
loop and aiosqlite's worker thread (connection checkout, BEGIN, execute, fetch,
rollback: eight per ``find_one``), each a queue put and a loop wake-up. A read of
the data engine is a small synchronous function of a connection instead —
``fn(conn) -> result``, a select, maybe a count and expands — and
:class:`ReadRunner` runs the whole function in one hop:

* **SQLite file**: on a thread of a small pool, with a plain ``sqlite3``
  connection of a synchronous engine over the same file (``query_only``, WAL
  lets it read while another connection writes); ``BEGIN`` (deferred) first,
  so every statement of the read sees one snapshot.
* **anything else** (PostgreSQL with asyncpg, in-memory SQLite, whose data lives
  in the async engine's own connection): ``AsyncConnection.run_sync(fn)`` on the
  async engine, as before.

Disposing the async engine disposes the companion engine's connections too (it
reconnects lazily, like SQLAlchemy engines do); the reader threads stay, idle.

    reads = ReadRunner(engine)
    rows = await reads.run(lambda conn: conn.execute(stmt).all())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

T = TypeVar("T")

#: Reader threads per engine: SQLite releases the GIL while it reads, so a few
#: threads let reads overlap; more than a few only adds contention on 2 cores.
DEFAULT_THREADS = 4


class ReadRunner:
    """Runs ``fn(sync_connection)`` for an async engine in as few loop round trips as possible."""

    def __init__(self, engine: AsyncEngine, *, threads: int = DEFAULT_THREADS) -> None:
        self._engine = engine
        self._threads = threads
        self._lock = threading.Lock()
        self._sync: sa.Engine | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        url = engine.url
        self.threaded = (
            engine.dialect.name == "sqlite"
            and url.database
            not in (
                None,
                "",
                ":memory:",
            )
            and "mode=memory" not in str(url)
        )
        if self.threaded:
            event.listen(engine.sync_engine, "engine_disposed", self._on_disposed)

    @property
    def engine(self) -> sa.Engine:
        """The engine whose connections reads run on (for event listeners, tests)."""
        return self._resources()[0] if self.threaded else self._engine.sync_engine

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """The result of ``fn`` called with a connection inside one read transaction."""
        if not self.threaded:
            async with self._engine.connect() as conn:
                return await conn.run_sync(fn)
        sync, executor = self._resources()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, _run_in_thread, sync, fn)

    def _resources(self) -> tuple[sa.Engine, concurrent.futures.ThreadPoolExecutor]:
        with self._lock:
            if self._sync is None or self._executor is None:
                self._sync = _companion_engine(self._engine, self._threads)
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._threads, thread_name_prefix="objectos-read"
                )
            return self._sync, self._executor

    def _on_disposed(self, _engine: Any) -> None:
        # Only the connections go: a read racing the dispose must not find its
        # executor shut down (the threads are cheap and exit with the process).
        with self._lock:
            sync = self._sync
        if sync is not None:
            sync.dispose()


def _run_in_thread(sync: sa.Engine, fn: Callable[[sa.Connection], T]) -> T:
    with sync.connect() as conn, conn.begin():
        return fn(conn)


def _companion_engine(engine: AsyncEngine, threads: int) -> sa.Engine:
    """A synchronous, read-only engine over the async engine's SQLite file."""
    from objectos.data.schema import configure_sqlite, sqlite_busy_timeout_ms

    sync = sa.create_engine(
        engine.url.set(drivername="sqlite"),
        poolclass=QueuePool,
        pool_size=threads,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )
    configure_sqlite(sync, busy_timeout_ms=sqlite_busy_timeout_ms(), read_only=True)
    return sync


__all__ = ["DEFAULT_THREADS", "ReadRunner"]
