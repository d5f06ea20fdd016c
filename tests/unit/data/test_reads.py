"""Reads in one hop (objectos.data.reads): what runs on reader threads, and what must not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data import DataEngine, create_engine
from objectos.data.query import QuerySpec
from objectos.data.reads import ReadRunner

from .doubles import ALICE


def own_records(name: str, table: sa.Table) -> Any:
    """A scope as SecuredDataService passes one: built on the loop, per object."""
    return table.c.owner == ALICE.user_id


async def deal(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.insert(
        "opportunity",
        {"name": "Deal", "account": account["id"], "amount": 1, "close_date": "2026-01-01"},
        actor=ALICE,
    )


async def test_plans_are_resolved_on_the_loop_never_on_a_reader_thread(data: DataEngine) -> None:
    await deal(data)
    threads: list[str] = []
    current = data._current

    def spy() -> Any:
        threads.append(threading.current_thread().name)
        return current()

    data._current = spy  # type: ignore[method-assign]
    page = await data.find(
        "opportunity", QuerySpec(expand=["account"]), actor=ALICE, scope=own_records
    )
    assert page.records[0]["account"]["name"] == "Acme"
    assert threads and not [t for t in threads if t.startswith("objectos-read")]


async def test_a_metadata_reload_during_a_read_does_not_break_it(data: DataEngine) -> None:
    await deal(data)
    run = data._reads.run

    async def reload_then_run(fn: Callable[[sa.Connection], Any]) -> Any:
        data.registry.version += 1  # replicas reload metadata in a thread, at any time
        return await run(fn)

    data._reads.run = reload_then_run  # type: ignore[method-assign]
    page = await data.find(
        "opportunity", QuerySpec(expand=["account"]), actor=ALICE, scope=own_records
    )
    assert page.records[0]["account"]["name"] == "Acme"


async def test_in_memory_sqlite_reads_on_the_async_engine(tmp_path: Path) -> None:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        reads = ReadRunner(engine)
        assert not reads.threaded  # its data lives in the async engine's own connection
        assert await reads.run(lambda conn: conn.execute(sa.text("select 1")).scalar()) == 1
    finally:
        await engine.dispose()


async def test_reads_work_again_after_the_engine_is_disposed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    reads = ReadRunner(engine)
    assert reads.threaded
    one = await reads.run(lambda conn: conn.execute(sa.text("select 1")).scalar())
    await engine.dispose()  # closes the reader threads and connections too
    assert await reads.run(lambda conn: conn.execute(sa.text("select 2")).scalar()) == 2
    assert one == 1
    await engine.dispose()


async def test_reader_connections_cannot_write(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        reads = ReadRunner(engine)
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            await reads.run(lambda conn: conn.execute(sa.text("create table t (x int)")))
    finally:
        await engine.dispose()


async def test_the_busy_timeout_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJECTOS_SQLITE_BUSY_TIMEOUT_MS", "1234")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    try:
        reads = ReadRunner(engine)
        timeout = await reads.run(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout").scalar())
        assert timeout == 1234
    finally:
        await engine.dispose()
