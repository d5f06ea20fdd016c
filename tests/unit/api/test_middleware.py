"""Request context (ids, W3C trace, access log), CORS and gzip."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from objectos.api.envelope import exception_handlers, respond
from objectos.api.middleware import HTTPSettings, hub_middleware, parse_traceparent

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def small_app(settings: HTTPSettings) -> httpx.AsyncClient:
    async def hello(request: Request) -> JSONResponse:
        return respond(request, {"text": "x" * int(request.query_params.get("size", "1"))})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("secret internals")

    app = Starlette(
        routes=[Route("/hello", hello), Route("/boom", boom)],
        middleware=hub_middleware(settings),
        exception_handlers=exception_handlers(),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_request_ids_are_kept_when_safe_and_made_otherwise() -> None:
    async with small_app(HTTPSettings(access_log=False)) as client:
        given = await client.get("/hello", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        assert given.json()["meta"]["requestId"] == "abc-123"

        unsafe = await client.get("/hello", headers={"X-Request-ID": "evil\nline"})
        assert unsafe.headers["x-request-id"] != "evil\nline"
        assert len(unsafe.headers["x-request-id"]) == 32


async def test_a_w3c_trace_is_continued_and_a_new_one_started_otherwise() -> None:
    async with small_app(HTTPSettings(access_log=False)) as client:
        continued = await client.get("/hello", headers={"traceparent": TRACEPARENT})
        assert continued.json()["meta"]["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        version, trace, span, flags = continued.headers["traceparent"].split("-")
        assert (version, trace, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
        assert span != "00f067aa0ba902b7"  # our span, child of the caller's

        fresh = await client.get("/hello")
        assert len(fresh.json()["meta"]["traceId"]) == 32


@pytest.mark.parametrize(
    "header",
    [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(header: str) -> None:
    assert parse_traceparent(header) is None


async def test_one_json_access_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="objectos.access")
    async with small_app(HTTPSettings(replica="r1")) as client:
        await client.get("/hello?secret=1", headers={"X-Request-ID": "log-me"})
        await client.get("/boom")

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "objectos.access"]
    assert [(line["path"], line["status"]) for line in lines] == [("/hello", 200), ("/boom", 500)]
    assert lines[0]["requestId"] == "log-me" and lines[0]["replica"] == "r1"
    assert lines[0]["method"] == "GET" and lines[0]["durationMs"] >= 0
    assert "secret" not in json.dumps(lines)  # no query strings in logs


async def test_the_access_log_can_be_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="objectos.access")
    async with small_app(HTTPSettings(access_log=False)) as client:
        await client.get("/hello")

    assert not [r for r in caplog.records if r.name == "objectos.access"]


async def test_unexpected_errors_leave_as_internal_error_without_details() -> None:
    async with small_app(HTTPSettings(access_log=False)) as client:
        response = await client.get("/boom")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text


async def test_cors_only_for_configured_origins() -> None:
    settings = HTTPSettings(access_log=False, cors_origins=("https://app.example",))
    async with small_app(settings) as client:
        preflight = await client.options(
            "/hello",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "PATCH",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        simple = await client.get("/hello", headers={"Origin": "https://app.example"})
        assert "etag" in simple.headers["access-control-expose-headers"].lower()
        other = await client.get("/hello", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers

    async with small_app(HTTPSettings(access_log=False)) as client:
        plain = await client.get("/hello", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in plain.headers


async def test_large_responses_are_gzipped() -> None:
    async with small_app(HTTPSettings(access_log=False)) as client:
        big = await client.get("/hello?size=5000", headers={"Accept-Encoding": "gzip"})
        small = await client.get("/hello?size=10", headers={"Accept-Encoding": "gzip"})

    assert big.headers["content-encoding"] == "gzip"
    assert big.json()["data"]["text"] == "x" * 5000
    assert "content-encoding" not in small.headers
