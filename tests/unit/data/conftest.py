"""Data engine tests run against real databases: a SQLite file, and PostgreSQL when available.

The ``database`` fixture yields an AsyncEngine on an empty database: a SQLite
file in ``tmp_path``, and — when ``OBJECTOS_TEST_POSTGRES_URL`` is set — a
schema of its own on that server (``search_path`` points at it), dropped after
the test. ``open_engine(registry)`` builds a migrated DataEngine on it; with no
registry it uses the sample CRM of ``configs/metadata``.

Test doubles and the actors tests act as live in :mod:`.doubles`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from objectos.data import DataEngine, create_engine
from objectos.data.hooks import DataHooks
from objectos.metadata import MetadataRegistry

from .doubles import CRM

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")


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
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'data.db'}")
        yield engine
        await engine.dispose()
        return
    assert POSTGRES_URL is not None
    schema = f"objectos_test_{uuid.uuid4().hex[:12]}"
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


OpenEngine = Callable[..., Awaitable[DataEngine]]


@pytest.fixture
def crm() -> MetadataRegistry:
    """The sample CRM."""
    return MetadataRegistry.load([CRM])


@pytest.fixture
def open_engine(database: AsyncEngine, crm: MetadataRegistry) -> OpenEngine:
    """``await open_engine(registry=None, hooks=None, clock=None)``: a migrated DataEngine."""

    async def factory(
        registry: MetadataRegistry | None = None,
        *,
        hooks: DataHooks | None = None,
        clock: Callable[[], Any] | None = None,
        migrate: bool = True,
    ) -> DataEngine:
        engine = DataEngine(database, registry or crm, hooks=hooks, clock=clock)
        if migrate:
            await engine.migrate()
        return engine

    return factory


@pytest.fixture
async def data(open_engine: OpenEngine) -> DataEngine:
    """A DataEngine over the sample CRM, on a fresh database."""
    return await open_engine()
