"""``/api/v1/audit`` over HTTP (ASGI, no Ray): writes made through REST, read back as a trail."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from objectos.api.audit import AuditRoutes, with_request_context
from objectos.api.envelope import exception_handlers
from objectos.api.middleware import HTTPSettings, hub_middleware
from objectos.api.rest import AnonymousAuthenticator, data_routes
from objectos.audit import AuditProjection, AuditQuery, AuditStore, SQLAuditSink
from objectos.data import DataEngine

AUDITOR = AnonymousAuthenticator("ann", ["auditor"])
SALES = AnonymousAuthenticator("eve", ["sales_rep"])


def build_app(
    data: DataEngine, database: AsyncEngine, reader: Any, sink: SQLAuditSink | None = None
) -> Starlette:
    """The data routes (acting as eve) and the audit routes (read as ``reader``)."""
    return Starlette(
        routes=[
            *data_routes(data, data.registry, with_request_context(SALES)),
            *AuditRoutes(database, reader, sink=sink).routes(),
        ],
        middleware=hub_middleware(HTTPSettings(access_log=False)),
        exception_handlers=exception_handlers(),
    )


@pytest.fixture
async def client(
    data: DataEngine, database: AsyncEngine, store: AuditStore
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(data, database, AUDITOR), client=("10.1.2.3", 5))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        yield http


async def write_through_rest(http: httpx.AsyncClient, projection: AuditProjection) -> str:
    headers = {"User-Agent": "pytest-client/1.0", "X-Request-ID": "req-42"}
    created = await http.post("/api/v1/data/account", json={"name": "Acme"}, headers=headers)
    record_id = created.json()["data"]["id"]
    await http.patch(
        f"/api/v1/data/account/{record_id}", json={"phone": "+1 555 0100"}, headers=headers
    )
    await projection.catch_up()
    return str(record_id)


async def test_a_write_through_rest_is_audited_with_its_request(
    client: httpx.AsyncClient, projection: AuditProjection
) -> None:
    record_id = await write_through_rest(client, projection)

    response = await client.get(f"/api/v1/audit/records/account/{record_id}?order=asc")

    assert response.status_code == 200
    body = response.json()
    created, updated = body["data"]
    assert created["action"] == "record.created"
    assert updated["changes"] == [{"field": "phone", "old": None, "new": "+1 555 0100"}]
    assert (updated["actor"], updated["ip"], updated["userAgent"], updated["requestId"]) == (
        "eve",
        "10.1.2.3",
        "pytest-client/1.0",
        "req-42",
    )
    assert len(updated["traceId"]) == 32
    assert body["pagination"]["hasMore"] is False


async def test_search_pages_with_the_next_cursor(
    client: httpx.AsyncClient, data: DataEngine, projection: AuditProjection
) -> None:
    for n in range(5):
        await client.post("/api/v1/data/account", json={"name": f"Account {n}"})
    await projection.catch_up()

    seen: list[str] = []
    url = "/api/v1/audit/events?object=account&limit=2&count=true"
    while url:
        body = (await client.get(url)).json()
        assert body["success"] and body["pagination"]["total"] == 5
        seen += [event["id"] for event in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        url = (
            f"/api/v1/audit/events?object=account&limit=2&count=true&cursor={cursor}"
            if cursor
            else ""
        )

    assert len(seen) == len(set(seen)) == 5


async def test_exports_stream_csv_and_json_lines(
    client: httpx.AsyncClient, projection: AuditProjection
) -> None:
    await write_through_rest(client, projection)

    jsonl = await client.get("/api/v1/audit/export?format=jsonl&order=asc")
    csv_export = await client.get("/api/v1/audit/export?format=csv&action=record.updated")

    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert "attachment" in jsonl.headers["content-disposition"]
    assert [json.loads(line)["action"] for line in jsonl.text.splitlines()] == [
        "record.created",
        "record.updated",
    ]
    assert csv_export.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(csv_export.text)))
    assert [(row["action"], row["ip"]) for row in rows] == [("record.updated", "10.1.2.3")]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/audit/events?limit=5000", "limit"),
        ("/api/v1/audit/events?from=soon", "from"),
        ("/api/v1/audit/events?colour=red", "colour"),
        ("/api/v1/audit/events?count=maybe", "count"),
        ("/api/v1/audit/events?cursor=abc", "cursor"),
        ("/api/v1/audit/export?format=xlsx", "format"),
        ("/api/v1/audit/export?limit=10", "limit"),
        ("/api/v1/audit/records/account/a1?object=case", "object"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    client: httpx.AsyncClient, path: str, field: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_filter"
    assert error["details"]["field"] == field
    assert error["requestId"]


async def test_only_auditors_read_the_trail_and_the_attempt_is_recorded(
    data: DataEngine, database: AsyncEngine, store: AuditStore
) -> None:
    async with SQLAuditSink(store) as sink:
        app = build_app(data, database, SALES, sink)
        transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 5))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            response = await http.get("/api/v1/audit/export?format=csv")
        await sink.flush()

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    query = AuditQuery.from_params({"action": "permission.denied"})
    [attempt] = (await store.search(query)).events
    assert (attempt.actor, attempt.ip, attempt.details["path"]) == (
        "eve",
        "10.9.9.9",
        "/api/v1/audit/export",
    )


async def test_before_the_plugin_made_its_tables_the_api_says_so(
    data: DataEngine, database: AsyncEngine
) -> None:
    transport = httpx.ASGITransport(app=build_app(data, database, AUDITOR))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        response = await http.get("/api/v1/audit/events")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"


async def test_searches_and_exports_are_themselves_recorded(
    data: DataEngine, database: AsyncEngine, store: AuditStore
) -> None:
    async with SQLAuditSink(store) as sink:
        transport = httpx.ASGITransport(app=build_app(data, database, AUDITOR, sink))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            await http.get("/api/v1/audit/events?actor=eve", headers={"X-Request-ID": "look-1"})
            await http.get("/api/v1/audit/export?format=csv")
        await sink.flush()

    events = (await store.search(AuditQuery.from_params({"action": "audit.*"}))).events
    exported, searched = events
    assert (searched.action, searched.actor, searched.request_id) == (
        "audit.searched",
        "ann",
        "look-1",
    )
    assert searched.details["query"]["actor"] == "eve"
    assert (exported.action, exported.details["format"]) == ("audit.exported", "csv")
