"""The REST app without Ray: real routes, a real DataEngine, a real database.

``rest_client`` is an httpx client talking to the pure Starlette app (data,
metadata, OpenAPI and docs routes, the hub middleware, the error handlers)
through ``httpx.ASGITransport``. The data lives in a SQLite file in
``tmp_path`` and — when ``OBJECTOS_TEST_POSTGRES_URL`` is set — also in a
PostgreSQL schema of its own, dropped afterwards; tests that take
``rest_client`` run once per database. The metadata is the sample CRM of
``configs/metadata``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from unit_databases import DATABASES, empty_database

from objectos.api.docs import docs_routes
from objectos.api.envelope import exception_handlers
from objectos.api.middleware import HTTPSettings, hub_middleware
from objectos.api.openapi import openapi_routes
from objectos.api.rest import AnonymousAuthenticator, data_routes
from objectos.data import DataEngine
from objectos.metadata import MetadataRegistry

CRM = Path(__file__).resolve().parents[3] / "configs" / "metadata"


def build_app(engine: DataEngine, **options: Any) -> Starlette:
    """The pure REST app over ``engine``, composed as deployments/api.py composes it."""
    registry = engine.registry
    settings = HTTPSettings(access_log=options.pop("access_log", False))
    return Starlette(
        routes=[
            *data_routes(engine, registry, options.pop("authenticate", None), **options),
            *openapi_routes(registry, title="CRM", version="1.0.0"),
            *docs_routes(),
        ],
        middleware=hub_middleware(settings),
        exception_handlers=exception_handlers(),
    )


@pytest.fixture(params=DATABASES)
async def rest_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema."""
    async with empty_database(request.param, tmp_path, "rest") as engine:
        yield engine


@pytest.fixture
def crm_registry() -> MetadataRegistry:
    """The sample CRM metadata."""
    return MetadataRegistry.load([CRM])


@pytest.fixture
async def rest_engine(rest_database: AsyncEngine, crm_registry: MetadataRegistry) -> DataEngine:
    """A migrated DataEngine over the CRM."""
    engine = DataEngine(rest_database, crm_registry)
    await engine.migrate()
    return engine


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def rest_app_client(rest_engine: DataEngine) -> ClientFactory:
    """``rest_app_client(**options)``: a client for an app built with ``data_routes`` options."""

    def make(**options: Any) -> httpx.AsyncClient:
        app = build_app(rest_engine, **options)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        )

    return make


@pytest.fixture
async def rest_client(rest_app_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the REST app with default options (anonymous user)."""
    async with rest_app_client(authenticate=AnonymousAuthenticator("alice")) as client:
        yield client


async def create(client: httpx.AsyncClient, obj: str, record: dict[str, Any]) -> dict[str, Any]:
    """POST a record and return it (the test fails unless it is created)."""
    response = await client.post(f"/api/v1/data/{obj}", json=record)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data
