"""Rate limits on real Ray Serve: two replicas behind the HAProxy ingress share one limit.

A second Serve app (``/rl``) runs the hub's HTTP app with rate limiting on and
a small bucket for the health route; its two replicas spend from the one
``ratelimiter`` actor. Were each replica limiting on its own, a client would
get twice the burst through.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import sign_in, wait_until

PREFIX = "/rl"
HEALTH = f"{PREFIX}/api/v1/health"
BURST, RATE, LEASE = 40, 0.2, 5


@pytest.fixture(scope="module")
def limited_url(ray_session: Any, serve_url: str, serve_hub: dict[str, Any]) -> Iterator[str]:
    """The hub app with rate limiting on, two replicas, next to the session app.

    It shares the session app's manifest (database, signing keys, accounts),
    so its replicas find everything made already; only the limits differ.
    """
    import ray
    from ray import serve

    from actors.factory import get_or_create_rate_limiter
    from deployments.api import APIGateway

    # The limiter is up before the replicas take traffic (as in a running hub),
    # so no replica starts out limiting on its own while the actor boots.
    ray.get(get_or_create_rate_limiter().stats.remote(), timeout=60)
    manifest = copy.deepcopy(serve_hub)
    manifest["serve"]["rateLimit"] = {
        "enabled": True,
        "routes": {"/api/v1/health": {"rate": RATE, "burst": BURST}},
        "exempt": [],
        "lease": LEASE,
    }
    app = APIGateway.options(num_replicas=2).bind(manifest)
    serve.run(app, name="ratelimit", route_prefix=PREFIX, blocking=False)

    def up() -> bool:
        try:
            status = httpx.get(f"{serve_url}{PREFIX}/api/v1/discovery", timeout=5).status_code
        except httpx.HTTPError:
            return False
        return status in (200, 503)

    wait_until(up, timeout=90, interval=0.5)
    yield serve_url
    serve.delete("ratelimit", _blocking=False)


async def hammer(
    url: str,
    total: int,
    parallel: int,
    path: str = HEALTH,
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """``total`` GETs of ``path``, ``parallel`` at a time, each on a new connection."""
    limits = httpx.Limits(max_keepalive_connections=0)
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=limits, headers=headers
    ) as client:

        async def one() -> httpx.Response:
            async with gate:
                return await client.get(path)

        return await asyncio.gather(*(one() for _ in range(total)))


def test_two_replicas_share_one_limit(start_hub: Any, limited_url: str) -> None:
    import ray

    kernel = start_hub({})  # the health route reports the kernel's plugins
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)

    started = time.monotonic()
    responses = asyncio.run(hammer(limited_url, total=3 * BURST, parallel=8))
    elapsed = time.monotonic() - started

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    admitted = statuses[200]
    replicas = {r.json()["data"]["replica"] for r in responses if r.status_code == 200}
    assert len(replicas) == 2, "both replicas must have served the client"
    # One shared bucket: the burst (plus what was earned meanwhile, plus at most
    # one lease per replica), less at most the lease the other replica holds.
    # Two independent buckets would have let 2 * BURST through.
    earned = math.ceil(RATE * elapsed)
    assert BURST - LEASE <= admitted <= BURST + earned + 2 * LEASE < 2 * BURST

    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["details"]["family"] == "/api/v1/health"
    # (Serve adds an x-request-id of its own; ours is among the values.)
    assert error["requestId"] in refused.headers["x-request-id"]
    assert "Traceback" not in refused.text


def test_signed_in_users_have_buckets_of_their_own_on_one_address(
    start_hub: Any, limited_url: str, crm_users: dict[str, str]
) -> None:
    """Every client here connects from 127.0.0.1: keyed by address, one user's
    burst would be everyone's. The replicas verify the token before limiting.
    (Placed before the limiter-death test, after which replicas limit on their
    own for a while, letting a client through twice.)"""
    import ray

    kernel = start_hub({})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    east = {"Authorization": f"Bearer {sign_in(limited_url, 'east_rep')}"}
    west = {"Authorization": f"Bearer {sign_in(limited_url, 'west_rep')}"}

    spent = asyncio.run(hammer(limited_url, total=3 * BURST, parallel=8, headers=east))
    statuses = Counter(r.status_code for r in spent)
    assert statuses[429] > 0 and set(statuses) <= {200, 429}, statuses  # east_rep is out
    again = asyncio.run(hammer(limited_url, total=4, parallel=2, headers=east))
    assert {r.status_code for r in again} == {429}

    fresh = asyncio.run(hammer(limited_url, total=BURST // 2, parallel=4, headers=west))
    assert {r.status_code for r in fresh} == {200}  # west_rep's bucket is untouched


def test_the_api_stays_up_when_the_limiter_actor_dies(start_hub: Any, limited_url: str) -> None:
    import ray

    from actors.factory import NAMESPACE, RATE_LIMITER_NAME

    discovery = f"{PREFIX}/api/v1/discovery"  # default family: 100/s, burst 200
    kernel = start_hub({})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    before = asyncio.run(hammer(limited_url, total=4, parallel=2, path=discovery))
    assert {r.status_code for r in before} == {200}
    ray.kill(ray.get_actor(RATE_LIMITER_NAME, namespace=NAMESPACE), no_restart=False)

    # The replicas' next leases fail; they limit on their own meanwhile and answer.
    during = asyncio.run(hammer(limited_url, total=40, parallel=4, path=discovery))
    assert {r.status_code for r in during} == {200}

    def actor_back() -> bool:
        from ray.exceptions import RayError

        try:
            actor = ray.get_actor(RATE_LIMITER_NAME, namespace=NAMESPACE)
            return "buckets" in ray.get(actor.stats.remote(), timeout=10)
        except (RayError, ValueError):
            return False  # still restarting

    wait_until(actor_back, timeout=60)
