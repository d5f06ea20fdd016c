"""Empty databases for unit tests: a SQLite file, and PostgreSQL when the environment has one.

Unit tests that touch SQL run once per database kind::

    @pytest.fixture(params=DATABASES)
    async def database(request, tmp_path):
        async with empty_database(request.param, tmp_path, "crm") as engine:
            yield engine

On PostgreSQL (``OBJECTOS_TEST_POSTGRES_URL``) each test gets a schema of its own
(``search_path`` points at it), dropped afterwards; on SQLite a file in ``tmp_path``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from objectos.data import create_engine

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")

#: Fixture params: every SQL test runs on SQLite, and on PostgreSQL when it is configured.
DATABASES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not POSTGRES_URL, reason="OBJECTOS_TEST_POSTGRES_URL is not set"),
        ],
    ),
]


@asynccontextmanager
async def empty_database(kind: str, tmp_path: Path, name: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of ``kind`` (``sqlite`` or ``postgresql``), disposed after."""
    if kind == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    assert POSTGRES_URL is not None
    schema = f"objectos_{name}_{uuid.uuid4().hex[:12]}"
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
