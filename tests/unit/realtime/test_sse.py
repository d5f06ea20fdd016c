"""The SSE endpoint over real HTTP: uvicorn on 127.0.0.1, httpx streaming, a real change log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request

from objectos.api.sse import POLL_PATH, SSE_PATH, RealtimeSSE
from objectos.data import Actor, DataEngine
from objectos.errors import InvalidToken, PermissionDenied
from objectos.realtime.feed import Backoff, NudgeOnCommit

from .conftest import Desk
from .doubles import ALICE, BOB, WRITER

TOKENS = {"alice-token": ALICE, "bob-token": BOB}


async def authenticate(request: Request) -> Actor:
    """Bearer token, or ``access_token`` in the query (EventSource cannot send headers)."""
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ") if header else request.query_params.get("access_token")
    if token not in TOKENS:
        raise InvalidToken("invalid or missing token")
    return TOKENS[token]


@dataclass
class Frame:
    """One SSE frame: its ``event`` type, ``id`` (if any) and JSON ``data``."""

    event: str
    id: str | None
    data: Any


class Stream:
    """Reads frames (and comments) from an open event stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self) -> Frame:
        fields: dict[str, str] = {}
        async with asyncio.timeout(20):
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return Frame(
                            fields.get("event", "message"),
                            fields.get("id"),
                            json.loads(fields["data"]),
                        )
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    async def take(self, count: int) -> list[Frame]:
        return [await self.next() for _ in range(count)]

    async def until(self, predicate: Callable[[Frame], bool]) -> list[Frame]:
        """Frames up to and including the first one ``predicate`` accepts."""
        frames = [await self.next()]
        while not predicate(frames[-1]):
            frames.append(await self.next())
        return frames


@dataclass
class Server:
    url: str
    sse: RealtimeSSE
    client: httpx.AsyncClient

    @contextlib.asynccontextmanager
    async def stream(
        self, token: str = "alice-token", headers: dict[str, str] | None = None, **params: Any
    ) -> AsyncIterator[Stream]:
        headers = {"authorization": f"Bearer {token}", **(headers or {})}
        async with self.client.stream("GET", SSE_PATH, params=params, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield Stream(response)

    async def get(
        self,
        token: str | None = "alice-token",
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        return await self.client.get(SSE_PATH, params=params, headers=headers)


@contextlib.asynccontextmanager
async def serve(desk: Desk, **options: Any) -> AsyncIterator[Server]:
    """The endpoint on uvicorn (behind GZip, as the REST app mounts it), commits nudging it."""
    sse = RealtimeSSE(
        desk.data.change_log,
        authenticate=authenticate,
        visibility=desk.visibility,
        columns=desk.data.tables.columns,
        idle=Backoff(3600, 3600),  # only nudges make it look: no test passes by polling
        **options,
    )
    desk.data.hooks = NudgeOnCommit(sse.nudge)
    app = Starlette(routes=[sse.route(), sse.poll_route()], middleware=[Middleware(GZipMiddleware)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # uvicorn failed to start: say why
                await asyncio.sleep(0.01)
        async with sse, httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Server(url, sse, client)
    finally:
        server.should_exit = True
        server.force_exit = True
        await task
        sock.close()


@pytest.fixture
async def server(desk: Desk) -> AsyncIterator[Server]:
    async with serve(desk, keepalive_s=60) as running:
        yield running


async def new_ticket(data: DataEngine, **fields: Any) -> dict[str, Any]:
    return await data.insert(
        "ticket", {"subject": "Printer", "team": "support", **fields}, actor=WRITER
    )


async def test_a_stream_carries_the_same_events_as_socketio(server: Server, desk: Desk) -> None:
    async with server.stream(objects="ticket") as stream:
        (ack,) = await stream.take(1)
        await new_ticket(desk.data, team="sales")
        mine = await new_ticket(desk.data, secret_note="vip")
        (event,) = await stream.take(1)

    assert (ack.event, ack.id, ack.data) == (
        "subscribed",
        "0",
        {"ok": True, "cursor": 0, "subscriptionId": "sse"},
    )
    assert event.event == "message" and event.id == "2"
    assert event.data["recordId"] == mine["id"]
    assert event.data["eventName"] == "record.created"
    assert set(event.data) == {
        "subscriptionId",
        "eventName",
        "object",
        "recordId",
        "record",
        "changedFields",
        "version",
        "cursor",
        "timestamp",
    }
    assert "secret_note" not in event.data["record"]


async def test_last_event_id_resumes_without_gap_or_duplicate(server: Server, desk: Desk) -> None:
    first = await new_ticket(desk.data, subject="one")
    async with server.stream(objects="ticket", since=0) as stream:
        frames = await stream.until(lambda f: f.event == "subscribed")
    last_id = [f.id for f in frames if f.id][-1]
    two = await new_ticket(desk.data, subject="two")
    three = await new_ticket(desk.data, subject="three")

    # EventSource reconnects to the same URL (since=0) and adds Last-Event-ID.
    async with server.stream(
        objects="ticket", since=0, headers={"last-event-id": last_id}
    ) as stream:
        resumed = await stream.until(lambda f: f.event == "subscribed")
        four = await new_ticket(desk.data, subject="four")
        (live,) = await stream.take(1)

    assert [(f.event, f.data.get("recordId")) for f in frames] == [
        ("message", first["id"]),
        ("subscribed", None),
    ]
    assert [(f.event, f.id, f.data.get("recordId")) for f in resumed] == [
        ("message", "2", two["id"]),
        ("message", "3", three["id"]),
        ("subscribed", "3", None),
    ]
    assert (live.id, live.data["recordId"]) == ("4", four["id"])


async def test_only_the_last_event_of_a_change_carries_an_id(server: Server, desk: Desk) -> None:
    ticket = await new_ticket(desk.data)
    async with server.stream(objects="ticket", events="record.updated,field.changed") as stream:
        await stream.take(1)
        await desk.data.update(
            "ticket", ticket["id"], {"subject": "Jam", "status": "open"}, actor=WRITER
        )
        frames = await stream.take(3)

    assert [(f.data["eventName"], f.data["changedFields"], f.id) for f in frames] == [
        ("record.updated", ["status", "subject"], None),
        ("field.changed", ["status"], None),
        ("field.changed", ["subject"], "2"),
    ]


async def test_several_objects_are_replayed_in_server_order(server: Server, desk: Desk) -> None:
    await new_ticket(desk.data)
    await desk.data.insert("note", {"body": "Called back", "team": "support"}, actor=WRITER)
    await new_ticket(desk.data)

    async with server.stream(
        objects="ticket,note", since=0, filter='{"team": "support"}'
    ) as stream:
        frames = await stream.until(lambda f: f.event == "subscribed")

    assert [(f.data.get("object"), f.id) for f in frames] == [
        ("ticket", "1"),
        ("note", "2"),
        ("ticket", "3"),
        (None, "3"),
    ]


async def test_an_idle_stream_gets_keepalive_comments(desk: Desk) -> None:
    async with serve(desk, keepalive_s=0.05) as server, server.stream(objects="ticket") as stream:
        await stream.take(1)
        await asyncio.sleep(0.3)
        await new_ticket(desk.data)
        await stream.take(1)

    assert "keepalive" in stream.comments


async def test_a_client_that_falls_behind_is_told_and_resumes_where_it_was(desk: Desk) -> None:
    tickets = [await new_ticket(desk.data, subject=f"#{n}") for n in range(5)]
    received: list[str] = []
    last_id = "0"
    async with serve(desk, queue_size=1, page_size=2) as server:
        for _ in range(5):
            async with server.stream(objects="ticket", headers={"last-event-id": last_id}) as s:
                frames = await s.until(lambda f: f.event in ("error", "subscribed"))
            received += [f.data["recordId"] for f in frames if f.event == "message"]
            last_id = [f.id for f in frames if f.id][-1] if any(f.id for f in frames) else last_id
            if frames[-1].event == "subscribed":
                break
            assert frames[-1].data["code"] == "service_unavailable"

    assert received == [t["id"] for t in tickets]


@pytest.mark.parametrize(
    ("token", "params", "headers", "status", "code", "field"),
    [
        (None, {"objects": "ticket"}, {}, 401, "invalid_token", None),
        ("alice-token", {}, {}, 400, "invalid_field", "objects"),
        ("alice-token", {"objects": "ticket", "sinse": "1"}, {}, 400, "invalid_field", "sinse"),
        ("alice-token", {"objects": "ticket", "filter": "{oops"}, {}, 400, "invalid_filter", None),
        (
            "alice-token",
            {"objects": "ticket", "filter": '{"secret_note": "x"}'},
            {},
            400,
            "invalid_field",
            "secret_note",
        ),
        ("alice-token", {"objects": "invoice"}, {}, 404, "object_not_found", None),
        (
            "alice-token",
            {"objects": "ticket", "events": "record.moved"},
            {},
            400,
            "invalid_field",
            "events",
        ),
        (
            "alice-token",
            {"objects": "ticket"},
            {"last-event-id": "yesterday"},
            400,
            "invalid_field",
            "Last-Event-ID",
        ),
        ("alice-token", {"objects": "ticket", "since": "99"}, {}, 400, "invalid_field", "since"),
    ],
)
async def test_bad_requests_get_the_error_envelope_before_any_stream(
    server: Server,
    token: str | None,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = await server.get(token, headers, **params)

    assert response.status_code == status
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    if field is not None:
        assert body["error"]["details"]["field"] == field
    assert "Traceback" not in response.text
    assert server.sse.open_streams == 0


async def test_an_object_the_caller_may_not_read_is_refused_not_streamed(desk: Desk) -> None:
    def require_read(actor: Any, object_name: str) -> None:
        if object_name == "note":
            raise PermissionDenied(f"no read access to {object_name}", details={"object": "note"})

    async with serve(desk, require_read=require_read) as running:
        refused = await running.get(objects="ticket,note")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        assert running.sse.open_streams == 0
        polled = await running.client.get(
            POLL_PATH, params={"objects": "note"}, headers={"authorization": "Bearer alice-token"}
        )
        assert polled.status_code == 403


async def test_closing_a_stream_unsubscribes_it(server: Server, desk: Desk) -> None:
    async with server.stream(objects="ticket") as stream:
        await stream.take(1)
        assert server.sse.open_streams == 1

    for _ in range(1000):  # the server notices the disconnect on its own schedule
        if not server.sse.open_streams:
            break
        await asyncio.sleep(0.01)
    assert server.sse.open_streams == 0
    assert server.sse._room.subscriber_count == 0
