"""Token refresh in HubClient: a refresh token is spent once, however many requests ask.

The hub rotates refresh tokens and treats a second use of one as theft (the whole
family is revoked), so concurrent requests that all get ``expired_token`` must
share one refresh. The peer here is a scripted HTTP handler that answers the way
the hub's auth routes do.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from objectos.client import HubClient

EXPIRED = {
    "success": False,
    "error": {
        "code": "expired_token",
        "message": "the access token has expired",
        "category": "auth",
        "details": {},
        "fieldErrors": [],
    },
}


async def test_concurrent_expired_token_retries_spend_the_refresh_token_once() -> None:
    spent: list[str] = []
    both_in_flight = asyncio.Event()

    async def hub(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/refresh"):
            spent.append(json.loads(request.content)["refreshToken"])
            await asyncio.sleep(0.05)
            tokens = {"accessToken": "A2", "refreshToken": f"R{len(spent) + 1}", "expiresIn": 900}
            return httpx.Response(200, json={"success": True, "data": tokens})
        if request.headers.get("authorization") == "Bearer A1":
            await both_in_flight.wait()
            return httpx.Response(401, json=EXPIRED)
        assert request.headers.get("authorization") == "Bearer A2"
        return httpx.Response(200, json={"success": True, "data": {"id": "u1"}})

    transport = httpx.MockTransport(hub)
    client = HubClient("http://hub.test", http=httpx.AsyncClient(transport=transport))
    client._keep({"accessToken": "A1", "refreshToken": "R1", "expiresIn": 900})
    calls = [asyncio.create_task(client.me()) for _ in range(3)]
    await asyncio.sleep(0.05)
    both_in_flight.set()
    assert [await call for call in calls] == [{"id": "u1"}] * 3
    assert spent == ["R1"]
