"""Audit tests run the real data engine and audit store on real databases.

``database`` is an empty SQLite file, or — when ``OBJECTOS_TEST_POSTGRES_URL``
is set — a PostgreSQL schema of its own (dropped after the test). ``data`` is
the sample CRM migrated into it, ``store`` the audit tables next to it, and
``projection`` the change-log projection between the two.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from unit_databases import DATABASES, empty_database

from objectos.audit import AuditProjection, AuditStore
from objectos.data import Actor, DataEngine
from objectos.metadata import MetadataRegistry

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


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database (SQLite file, or a fresh PostgreSQL schema)."""
    async with empty_database(request.param, tmp_path, "audit") as engine:
        yield engine


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
