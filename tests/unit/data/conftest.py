"""Data engine tests run against real databases: a SQLite file, and PostgreSQL when available.

The ``database`` fixture yields an AsyncEngine on an empty database: a SQLite
file in ``tmp_path``, and — when ``OBJECTOS_TEST_POSTGRES_URL`` is set — a
schema of its own on that server (``search_path`` points at it), dropped after
the test. ``open_engine(registry)`` builds a migrated DataEngine on it; with no
registry it uses the sample CRM of ``configs/metadata``.

Test doubles and the actors tests act as live in :mod:`.doubles`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from unit_databases import DATABASES, empty_database

from objectos.data import DataEngine
from objectos.data.hooks import DataHooks
from objectos.metadata import MetadataRegistry

from .doubles import CRM


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database (SQLite file, or a fresh PostgreSQL schema)."""
    async with empty_database(request.param, tmp_path, "data") as engine:
        yield engine


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
