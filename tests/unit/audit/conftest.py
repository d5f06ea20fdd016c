"""Audit tests run the real data engine and audit store on real databases.

``database`` is an empty SQLite file, or — when ``OBJECTOS_TEST_POSTGRES_URL``
is set — a PostgreSQL schema of its own (dropped after the test). ``data`` is
the sample CRM migrated into it, ``store`` the audit tables next to it, and
``projection`` the change-log projection between the two.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from objectos.audit import AuditProjection, AuditStore
from objectos.data import Actor, DataEngine, create_engine
from objectos.metadata import MetadataRegistry

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")
METADATA = Path(__file__).resolve().parents[3] / "configs" / "metadata"

#: A user acting through the REST API, with the request the hub saw.
ALICE = Actor.user(
    "alice",
    ["sales_rep"],
    context={
        "ip": "203.0.113.7",
        "userAgent": "curl/8.5",
        "requestId": "req-1",
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
    },
)
SEED = Actor.system_actor("seed")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not POSTGRES_URL, reason="OBJECTOS_TEST_POSTGRES_URL is not set"
                ),
            ],
        ),
    ]
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database (SQLite file, or a fresh PostgreSQL schema)."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        yield engine
        await engine.dispose()
        return
    assert POSTGRES_URL is not None
    schema = f"objectos_audit_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
def crm() -> MetadataRegistry:
    """The sample CRM (objects and permission files)."""
    return MetadataRegistry.load([METADATA])


@pytest.fixture
async def data(database: AsyncEngine, crm: MetadataRegistry) -> DataEngine:
    """The sample CRM, migrated into ``database``."""
    engine = DataEngine(database, crm)
    await engine.migrate()
    return engine


@pytest.fixture
async def store(database: AsyncEngine) -> AuditStore:
    """The audit tables, created in ``database``."""
    audit = AuditStore(database)
    await audit.create()
    return audit


@pytest.fixture
def projection(data: DataEngine, store: AuditStore) -> AuditProjection:
    """The change log of ``data`` projected into ``store`` (not started)."""
    return AuditProjection(data.change_log, store, batch_size=50)


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``.

    For conditions reached by a background task (projection, sink); the
    timeout only bounds a broken test, it asserts nothing about speed.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.01)
