"""Rate limiting by the verified principal, when authentication happens in the routes.

The app is composed as the hub composes it: :class:`RateLimit` in front of
routes that authenticate with the hub's :class:`HubAuthenticator`, with
``identify=verified_identity(authenticator.remember)``. All clients connect
from one address, as they do behind Serve's ingress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from objectos.api.auth import error_response
from objectos.api.ratelimit import FailedVerifications, RateLimit, verified_identity
from objectos.protocol.manifest import RateLimitRule, RateLimitSettings

from .conftest import Hub, bearer

#: Three requests per client, then (practically) nothing more during a test.
LIMITS = RateLimitSettings(enabled=True, default=RateLimitRule(rate=0.001, burst=3))


@pytest.fixture
async def limited(hub: Hub) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """A client of the limited app, and for each request that reached the route what
    the rate limiter had found out about its caller: ``auth``, ``error`` or ``none``."""
    verified_before_route: list[str] = []

    async def whoami(request: Request) -> Response:
        state = request.state
        found = (
            "auth"
            if hasattr(state, "auth")
            else "error"
            if hasattr(state, "auth_error")
            else "none"
        )
        verified_before_route.append(found)
        try:
            actor = await hub.authenticator(request)
        except Exception as exc:
            return error_response(request, exc)
        return JSONResponse({"user": actor.user_id})

    app = Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[
            Middleware(
                RateLimit,
                settings=LIMITS,
                identify=verified_identity(hub.authenticator.remember),
            )
        ],
    )
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client, verified_before_route


async def token_of(hub: Hub, email: str) -> str:
    return str((await hub.session(email))["accessToken"])


async def test_each_signed_in_user_has_a_bucket_of_their_own_on_one_address(
    hub: Hub, limited: tuple[httpx.AsyncClient, list[str]]
) -> None:
    client, _ = limited
    ada = bearer(await token_of(hub, "ada@example.test"))
    grace = bearer(await token_of(hub, "grace@example.test"))
    for _ in range(3):
        assert (await client.get("/whoami", headers=ada)).status_code == 200
    assert (await client.get("/whoami", headers=ada)).status_code == 429
    # Same address, another principal: untouched by Ada's use.
    for _ in range(3):
        assert (await client.get("/whoami", headers=grace)).status_code == 200
    assert (await client.get("/whoami", headers=grace)).status_code == 429
    # ...and the address itself still has its own bucket for anonymous callers.
    for _ in range(3):
        assert (await client.get("/whoami")).status_code == 401
    assert (await client.get("/whoami")).status_code == 429


async def test_a_forged_token_spends_its_address_bucket_not_the_users(
    hub: Hub, limited: tuple[httpx.AsyncClient, list[str]]
) -> None:
    client, _ = limited
    token = await token_of(hub, "ada@example.test")
    header, payload, _ = token.split(".")
    forged = bearer(f"{header}.{payload}.{'A' * 43}")  # Ada's claims, no valid signature
    for _ in range(3):
        refused = await client.get("/whoami", headers=forged)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_token"
    assert (await client.get("/whoami", headers=forged)).status_code == 429
    assert (await client.get("/whoami")).status_code == 429  # the address's bucket
    assert (await client.get("/whoami", headers=bearer(token))).status_code == 200  # Ada's


async def test_an_api_key_counts_as_its_service_account(
    hub: Hub, limited: tuple[httpx.AsyncClient, list[str]]
) -> None:
    client, _ = limited
    account = await hub.identity.create_service_account("scraper", roles=["integration"])
    _, key = await hub.identity.create_api_key(account.id)
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}, bearer(key)):
        response = await client.get("/whoami", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"user": account.id}
    assert (
        await client.get("/whoami", headers={"Authorization": f"ApiKey {key}"})
    ).status_code == 429
    assert (await client.get("/whoami")).status_code == 401  # the address is not spent


async def test_the_route_reuses_the_verification_of_the_limiter(
    hub: Hub, limited: tuple[httpx.AsyncClient, list[str]]
) -> None:
    client, verified_before_route = limited
    ada = bearer(await token_of(hub, "ada@example.test"))
    assert (await client.get("/whoami", headers=ada)).status_code == 200
    assert (
        await client.get("/whoami", headers={"Authorization": "Bearer junk"})
    ).status_code == 401
    assert (await client.get("/whoami")).status_code == 401
    # Credentials were verified by the limiter, good and bad alike (the route answers
    # from what it found); without one there was nothing to verify.
    assert verified_before_route == ["auth", "error", "none"]


async def test_an_api_key_works_as_a_bearer_token(hub: Hub) -> None:
    """Scrapers (Prometheus) send only ``Authorization: Bearer``."""
    account = await hub.identity.create_service_account("prometheus")
    _, key = await hub.identity.create_api_key(account.id)
    response = await hub.me(bearer(key))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["auth"]["method"] == "api_key"


async def test_an_address_sending_bad_credentials_stops_being_verified() -> None:
    verified: list[str] = []

    async def verify(request: Request) -> None:  # every credential is bad
        verified.append(request.headers["authorization"])

    now = [0.0]
    failures = FailedVerifications(burst=3, rate=1.0, clock=lambda: now[0])
    identify = verified_identity(verify, failures=failures)

    def scope(address: str, key: str) -> dict[str, Any]:
        return {
            "type": "http",
            "headers": [(b"authorization", f"Bearer oos_{key}".encode())],
            "client": (address, 1234),
            "state": {},
        }

    keys = [await identify(scope("203.0.113.9", f"made-up-{i}")) for i in range(10)]
    assert set(keys) == {"ip:203.0.113.9"}
    assert len(verified) == 3  # then counted against the address, unverified
    assert await identify(scope("198.51.100.7", "other")) == "ip:198.51.100.7"
    assert len(verified) == 4  # another address still gets its credentials checked
    now[0] += 2.0  # allowance refills
    await identify(scope("203.0.113.9", "again"))
    assert len(verified) == 5
