"""Long polling (``GET /api/v1/realtime/poll``) over real HTTP: uvicorn, httpx, a real log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from objectos.api.sse import POLL_PATH, RealtimeSSE
from objectos.data import DataEngine

from .conftest import Desk
from .doubles import WRITER
from .test_sse import serve as serve_sse


@contextlib.asynccontextmanager
async def serve(desk: Desk, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, RealtimeSSE]]:
    """The SSE test server (which mounts the polling route too): its client and endpoint."""
    async with serve_sse(desk, **options) as running:
        yield running.client, running.sse


async def poll(client: httpx.AsyncClient, token: str = "alice-token", **params: Any) -> Any:
    response = await client.get(
        POLL_PATH, params=params, headers={"authorization": f"Bearer {token}"}
    )
    return response


async def ticket(data: DataEngine, **fields: Any) -> dict[str, Any]:
    return await data.insert(
        "ticket", {"subject": "Printer", "team": "support", **fields}, actor=WRITER
    )


async def test_polls_resume_from_the_cursor_without_gap_or_duplicate(desk: Desk) -> None:
    async with serve(desk) as (client, sse):
        first = await ticket(desk.data, subject="one")
        await ticket(desk.data, team="sales")  # alice may not read it
        answer = (await poll(client, objects="ticket", since=0, timeout=0)).json()["data"]
        assert [e["recordId"] for e in answer["events"]] == [first["id"]]
        assert answer["cursor"] == 2 and answer["hasMore"] is False

        # Nothing new: waits, then an event committed meanwhile answers it at once.
        waiting = asyncio.create_task(
            poll(client, objects="ticket", since=answer["cursor"], timeout=20)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started = time.monotonic()
        third = await ticket(desk.data, subject="three", secret_note="vip")
        response = await waiting
        assert time.monotonic() - started < 5
        data = response.json()["data"]
        assert [e["recordId"] for e in data["events"]] == [third["id"]]
        assert "secret_note" not in data["events"][0]["record"]
        assert data["cursor"] == 3

        again = (await poll(client, objects="ticket", since=data["cursor"], timeout=0)).json()
        assert again["data"]["events"] == [] and again["data"]["cursor"] == 3
        assert sse.open_streams == 0 and sse._room.subscriber_count == 0


async def test_a_long_backlog_comes_in_pieces_that_join_up(desk: Desk) -> None:
    tickets = [await ticket(desk.data, subject=f"#{n}") for n in range(7)]
    received: list[str] = []
    async with serve(desk, page_size=2, poll_batches=1) as (client, _):
        cursor = 0
        for _ in range(10):
            data = (await poll(client, objects="ticket", since=cursor, timeout=0)).json()["data"]
            received += [e["recordId"] for e in data["events"]]
            cursor = data["cursor"]
            if not data["hasMore"]:
                break
    assert received == [t["id"] for t in tickets]
    assert cursor == 7


async def test_an_empty_poll_times_out_with_the_same_cursor(desk: Desk) -> None:
    await ticket(desk.data)
    async with serve(desk) as (client, _):
        started = time.monotonic()
        data = (await poll(client, objects="ticket", timeout=0.3)).json()["data"]
        assert 0.3 <= time.monotonic() - started < 5
        assert data == {"events": [], "cursor": 1, "hasMore": False, "subscriptionId": "sse"}


@pytest.mark.parametrize(
    ("token", "params", "status", "code", "field"),
    [
        ("nobody", {"objects": "ticket"}, 401, "invalid_token", None),
        ("alice-token", {"objects": "ticket", "timeout": "61"}, 400, "invalid_field", "timeout"),
        ("alice-token", {"objects": "ticket", "timeout": "nan"}, 400, "invalid_field", "timeout"),
        ("alice-token", {"objects": "ticket", "wait": "1"}, 400, "invalid_field", "wait"),
        ("alice-token", {"objects": "ticket", "since": "99"}, 400, "invalid_field", "since"),
        ("alice-token", {"objects": "invoice"}, 404, "object_not_found", None),
    ],
)
async def test_bad_polls_get_the_error_envelope(
    desk: Desk,
    token: str,
    params: dict[str, str],
    status: int,
    code: str,
    field: str | None,
) -> None:
    async with serve(desk) as (client, sse):
        response = await poll(client, token, **params)
        assert response.status_code == status
        body = response.json()
        assert body["success"] is False and body["error"]["code"] == code
        if field is not None:
            assert body["error"]["details"]["field"] == field
        assert sse.open_streams == 0
