"""Storage engines to run the same tests against: memory, a SQLite file, PostgreSQL.

PostgreSQL runs when ``OBJECTOS_TEST_POSTGRES_URL`` is set. Those tests share
that database with whatever else uses it, so every scope they write starts with
a per-session token, their rows are deleted after each test, and the
``_plugin_storage`` table is dropped at the end only if this session created it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from objectos.plugins.storage import (
    TABLE_NAME,
    MemoryStorageEngine,
    SQLStorageEngine,
    StorageEngine,
)

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")
SESSION_TOKEN = uuid.uuid4().hex[:10]
T = TypeVar("T")


@dataclass(frozen=True)
class PluginIds:
    """Two plugin ids, unique to this test session (they are storage scopes)."""

    a: str = f"com.t{SESSION_TOKEN}.alpha"
    b: str = f"com.t{SESSION_TOKEN}.beta"


@pytest.fixture
def ids() -> PluginIds:
    return PluginIds()


def _run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a loop of its own, even from inside a running loop.

    The PostgreSQL fixtures are sync (so async fixtures can request them by
    name) but may be set up while a test's event loop runs in this thread.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _postgres_cleanup(url: str, *, drop_table: bool) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(TABLE_NAME))
            if not exists:
                return
            table = sa.table(TABLE_NAME, sa.column("scope"))
            await conn.execute(
                sa.delete(table).where(table.c.scope.startswith(f"com.t{SESSION_TOKEN}."))
            )
            if drop_table:
                left = await conn.scalar(sa.select(sa.func.count()).select_from(table))
                if left == 0:
                    await conn.execute(sa.text(f"DROP TABLE {TABLE_NAME}"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL URL, or skip; drops the table afterwards if this session made it."""
    if not POSTGRES_URL:
        pytest.skip("set OBJECTOS_TEST_POSTGRES_URL to run the PostgreSQL tests")

    async def table_exists() -> bool:
        engine = create_async_engine(POSTGRES_URL)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: sa.inspect(c).has_table(TABLE_NAME))
        finally:
            await engine.dispose()

    existed = _run_blocking(table_exists())
    yield POSTGRES_URL
    _run_blocking(_postgres_cleanup(POSTGRES_URL, drop_table=not existed))


@pytest.fixture
def postgres_rows(postgres_url: str) -> Iterator[str]:
    """The PostgreSQL URL; this session's rows are deleted after the test."""
    yield postgres_url
    _run_blocking(_postgres_cleanup(postgres_url, drop_table=False))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'objectos.db'}"


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def engine(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[StorageEngine]:
    """A started engine of each kind."""
    engine: StorageEngine
    if request.param == "memory":
        engine = MemoryStorageEngine()
    elif request.param == "sqlite":
        engine = SQLStorageEngine(sqlite_url)
    else:
        engine = SQLStorageEngine(request.getfixturevalue("postgres_rows"))
    await engine.start()
    yield engine
    await engine.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The URL of each persistent database."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("postgres_rows"))
